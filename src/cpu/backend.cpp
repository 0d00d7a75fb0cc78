// backend.cpp (cpu): the CPU backend: one device (the host), the reference engine, gradients
// over the group's MPI communicator.
#include <sys/resource.h>

#include "btm/cpu/engine.hpp"
#include "btm/util/error.hpp"

namespace btm {
namespace {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu; }
  int device_count() const override { return 1; }
  std::string device_id(int) const override { return ""; }
  std::unique_ptr<Engine> make_engine(const ModelConfig& model,
                                      const EngineOptions& options) const override {
    if (options.attention != "auto")
      throw InputError("--attention " + options.attention +
                       ": the CPU engine has one attention (use auto, or run.device = cuda)");
    return make_cpu_engine(model, options.threads);
  }
  std::size_t memory_used() const override {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<std::size_t>(usage.ru_maxrss) * 1024;
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() {
  return std::make_unique<CpuBackend>();
}

}  // namespace btm

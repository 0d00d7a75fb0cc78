// backend.cpp (cpu): the CPU backend: one device (the host), the reference engine, gradients
// over the group's MPI communicator.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "btm/cpu/engine.hpp"
#include "btm/model/params.hpp"
#include "btm/util/error.hpp"
#include "btm/util/host_memory.hpp"

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
  // The CPU engine's buffers (cpu_engine.cpp): parameters, gradients and AdamW moments (fp32),
  // the exact sums of a step of several micro-batches (int64), and per token the activations of
  // every layer (16 C + NH T + 4 floats) and of the head (12 C + Vp + 3 floats).
  void check_fits(const ModelConfig& model, const EngineOptions& options,
                  int ranks_here) const override {
    const double n = static_cast<double>(ParamLayout(model).total());
    const double C = model.d_model, T = model.context, L = model.n_layer;
    const double per_token =
        L * (16 * C + model.n_head * T + 4) + 12 * C + model.padded_vocab() + 3;
    const double state = 4 * 4 * n + 8 * n;
    const double activations = 4 * per_token * options.max_batch * T;
    const double available = available_host_bytes() / std::max(1, ranks_here);
    if (state + activations <= 0.9 * available) return;
    char text[320];
    std::snprintf(text, sizeof(text),
                  "the model needs about %.1f GB per rank (parameters and optimizer state %.1f GB, "
                  "activations at data.batch = %d and model.context = %d %.1f GB); this node has "
                  "%.1f GB available for each of its %d ranks",
                  (state + activations) / 1e9, state / 1e9, options.max_batch, model.context,
                  activations / 1e9, available / 1e9, ranks_here);
    throw InputError(
        std::string(text) +
        ": lower data.batch (and raise data.accum to keep the batch) or model.context, "
        "or run fewer ranks per node");
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

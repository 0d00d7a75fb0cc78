// backend.cpp (cuda): the CUDA backend (backend.hpp).
#include "btm/cuda/backend.hpp"

#include <cuda_runtime.h>

#include <chrono>

#include "btm/cuda/check.hpp"
#include "btm/cuda/engine.hpp"
#include "btm/cuda/kernel_cases.hpp"
#include "btm/cuda/nccl_comm.hpp"
#include "btm/util/error.hpp"

namespace btm {
namespace {

CudaAttention attention_of(const std::string& name) {
  if (name == "auto") return CudaAttention::Auto;
  if (name == "flash") return CudaAttention::Flash;
  if (name == "flash-mma.sync") return CudaAttention::FlashMmaSync;
  if (name == "materialized") return CudaAttention::Materialized;
  throw InputError("attention '" + name + "': use auto, flash, flash-mma.sync or materialized");
}

class CudaBackend final : public Backend {
 public:
  Device device() const override { return Device::cuda; }
  int device_count() const override { return cuda_visible_devices(); }
  std::string device_id(int device) const override { return cuda_pci_bus_id(device); }
  std::unique_ptr<Engine> make_engine(const ModelConfig& model,
                                      const EngineOptions& options) const override {
    return make_cuda_engine(model, options.gpu, options.max_batch, attention_of(options.attention));
  }
  std::unique_ptr<Communicator> gradient_comm(MpiComm& group, int device) const override {
    return make_nccl_comm(group, device);
  }
  // The CUDA engine allocates every buffer when it is made: make one and see. The exact sums of
  // a step of several micro-batches (8 bytes per parameter) come later; they must fit too.
  void check_fits(const ModelConfig& model, const EngineOptions& options, int) const override {
    try {
      const std::unique_ptr<Engine> engine = make_engine(model, options);
      std::size_t free_bytes = 0, total_bytes = 0;
      BTM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
      const double sums = 8.0 * static_cast<double>(engine->layout().total());
      if (sums > static_cast<double>(free_bytes))
        throw SystemError("out of memory for the step's exact sums");
    } catch (const SystemError& e) {
      if (std::string(e.what()).find("out of memory") == std::string::npos) throw;
      throw InputError("the model does not fit GPU " + std::to_string(options.gpu) +
                       " at data.batch = " + std::to_string(options.max_batch) +
                       " and model.context = " + std::to_string(model.context) + " (" + e.what() +
                       "): lower data.batch (and raise data.accum to keep the batch) or "
                       "model.context, or use more GPUs per ELM");
    }
  }
  // Device bytes in use on the current device (cudaMemGetInfo: total - free, the CUDA context
  // and other processes on the same GPU included).
  std::size_t memory_used() const override {
    std::size_t free_bytes = 0, total_bytes = 0;
    BTM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    return total_bytes - free_bytes;
  }
  // The data-sheet dense bf16 figures: H100/H200 SXM (sm_90) 989, A100 (sm_80) 312.
  double peak_tflops() const override {
    int device = 0;
    BTM_CUDA_CHECK(cudaGetDevice(&device));
    cudaDeviceProp prop{};
    BTM_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    if (prop.major == 9 && prop.minor == 0) return 989.0;
    if (prop.major == 8 && prop.minor == 0) return 312.0;
    return 0;
  }
  double time_allreduce_ms(Communicator& comm, std::size_t count, int iterations,
                           int warmup) const override {
    if (comm.space() == MemorySpace::Host)
      return Backend::time_allreduce_ms(comm, count, iterations, warmup);
    std::int64_t* buffer = nullptr;
    BTM_CUDA_CHECK(cudaMalloc(&buffer, count * sizeof(std::int64_t)));
    BTM_CUDA_CHECK(cudaMemset(buffer, 0, count * sizeof(std::int64_t)));
    for (int i = 0; i < warmup; ++i) comm.allreduce_sum(buffer, count);
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iterations; ++i) comm.allreduce_sum(buffer, count);  // each synchronises
    const std::chrono::duration<double, std::milli> ms = std::chrono::steady_clock::now() - start;
    BTM_CUDA_CHECK(cudaFree(buffer));
    return ms.count() / iterations;
  }
  void bench_kernel_cases(const std::string& filter, int warmup, int iterations,
                          std::ostream& out) const override {
    cuda::bench_kernel_cases(filter, warmup, iterations, out);
  }
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend() {
  return std::make_unique<CudaBackend>();
}

}  // namespace btm

#include "btm/engine.hpp"
#include "btm/error.hpp"

#ifdef BTM_HAVE_CUDA
#include "btm/cuda_comm.hpp"
#include "btm/cuda_engine.hpp"
#endif

namespace btm {

int cuda_device_count() {
#ifdef BTM_HAVE_CUDA
  return cuda_visible_devices();
#else
  return 0;
#endif
}

std::string cuda_device_pci_id([[maybe_unused]] int gpu) {
#ifdef BTM_HAVE_CUDA
  return cuda_pci_bus_id(gpu);
#else
  throw InputError("this btm was built without CUDA");
#endif
}

std::string resolve_device(const std::string& requested) {
  if (requested == "cpu") return "cpu";
  const int gpus = cuda_device_count();
  if (requested == "cuda") {
#ifndef BTM_HAVE_CUDA
    throw InputError(
        "run.device = cuda, but this btm was built without CUDA: rebuild with "
        "-DBTM_CUDA=ON, or use run.device = cpu");
#endif
    if (gpus == 0)
      throw InputError(
          "run.device = cuda, but no GPU is visible to this process (check "
          "CUDA_VISIBLE_DEVICES and the Slurm GPU binding), or use run.device = cpu");
    return "cuda";
  }
  if (requested == "auto") return gpus > 0 ? "cuda" : "cpu";
  throw InputError("run.device is '" + requested + "': use auto, cpu or cuda");
}

std::unique_ptr<Engine> make_engine(const ModelConfig& model, const EngineOptions& options) {
  if (options.device == "cpu") return make_cpu_engine(model, options.threads);
#ifdef BTM_HAVE_CUDA
  if (options.device == "cuda") return make_cuda_engine(model, options.gpu, options.max_batch);
#endif
  throw InputError("no engine for device '" + options.device + "' in this build");
}

Communicator* gradient_comm(const Engine& engine, MpiComm& group, int gpu, bool gpus_shared,
                            std::unique_ptr<Communicator>& storage) {
  (void)gpu;
  (void)gpus_shared;
  (void)storage;
  if (group.size() == 1) return nullptr;
#ifdef BTM_HAVE_CUDA
  if (engine.kind() == "cuda" && !gpus_shared) {
    storage = make_nccl_comm(group, gpu);
    return storage.get();
  }
#else
  (void)engine;
#endif
  return &group;
}

}  // namespace btm

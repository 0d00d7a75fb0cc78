// cuda_engine.hpp: the CUDA engine (bf16 compute, fp32 master weights and AdamW moments,
// cuBLASLt GEMMs, fused kernels) behind the Engine interface. Only in builds with BTM_HAVE_CUDA.
#pragma once

#include <memory>

#include "btm/config.hpp"
#include "btm/engine.hpp"

namespace btm {

// Number of CUDA devices visible to this process (0 if the driver or devices are missing).
int cuda_visible_devices();

// An engine on device `gpu` (cudaSetDevice is called), with activations for batches up to
// max_batch sequences of model.context tokens preallocated.
std::unique_ptr<Engine> make_cuda_engine(const ModelConfig& model, int gpu, int max_batch);

}  // namespace btm

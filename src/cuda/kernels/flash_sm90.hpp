// flash_sm90.hpp: the Hopper (sm_90a) flash attention kernels' launchers, for
// flash_attention.cu's dispatch. Internal to src/cuda. Same arguments and results as the
// mma.sync kernels there; dvec must already hold the backward's row dots dO . O.
#pragma once

#include <cuda_runtime.h>

#include "btm/cuda/kernels/bf16.hpp"

namespace btm::cuda::sm90 {

// Whether this build carries the sm_90a kernels (CMAKE_CUDA_ARCHITECTURES lists 90a).
bool built();

void flash_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int NH,
                   cudaStream_t stream);
void flash_backward(bf16* dqkv, const bf16* dout, const bf16* qkv, const float* lse,
                    const float* dvec, int B, int T, int NH, cudaStream_t stream);

}  // namespace btm::cuda::sm90

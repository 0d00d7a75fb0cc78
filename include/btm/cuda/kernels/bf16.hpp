// bf16.hpp: the element type of the CUDA kernels' activations (bf16 = __nv_bfloat16) and the
// CUDA runtime types (cudaStream_t) every kernel header of cuda/kernels/ uses. Only in builds
// with BTM_HAVE_CUDA.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace btm::cuda {

using bf16 = __nv_bfloat16;

}  // namespace btm::cuda

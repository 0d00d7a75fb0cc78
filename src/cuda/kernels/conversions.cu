// conversions.cu: fp32 <-> bf16 copies (cuda/kernels/conversions.hpp), grid-stride loops.
#include <cstddef>

#include "btm/cuda/check.hpp"
#include "btm/cuda/kernels/conversions.hpp"
#include "common.cuh"

namespace btm::cuda {
namespace {

__global__ void float_to_bf16_kernel(bf16* out, const float* in, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16(in[i]);
}
__global__ void bf16_to_float_kernel(float* out, const bf16* in, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    out[i] = __bfloat162float(in[i]);
}

}  // namespace

void float_to_bf16(bf16* out, const float* in, std::size_t n, cudaStream_t stream) {
  if (n == 0) return;
  float_to_bf16_kernel<<<grid_for(n, 256), 256, 0, stream>>>(out, in, n);
  BTM_CUDA_CHECK_LAUNCH();
}

void bf16_to_float(float* out, const bf16* in, std::size_t n, cudaStream_t stream) {
  if (n == 0) return;
  bf16_to_float_kernel<<<grid_for(n, 256), 256, 0, stream>>>(out, in, n);
  BTM_CUDA_CHECK_LAUNCH();
}

}  // namespace btm::cuda

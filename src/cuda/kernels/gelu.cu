// gelu.cu: GELU, tanh approximation, forward and backward (cuda/kernels/gelu.hpp), element-wise
// on 16-byte packs of 8 bf16 where the length and alignment allow it.
#include <cstddef>

#include "btm/cuda/check.hpp"
#include "btm/cuda/kernels/gelu.hpp"
#include "common.cuh"

namespace btm::cuda {
namespace {

constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)

__device__ __forceinline__ float gelu(float x) {
  const float cube = 0.044715f * x * x * x;
  return 0.5f * x * (1.0f + tanhf(kGeluScale * (x + cube)));
}
__device__ __forceinline__ float gelu_grad(float x) {
  const float cube = 0.044715f * x * x * x;
  const float t = tanhf(kGeluScale * (x + cube));
  const float sech2 = 1.0f - t * t;
  return 0.5f * (1.0f + t) + 0.5f * x * sech2 * kGeluScale * (1.0f + 3.0f * 0.044715f * x * x);
}

template <int P>
__global__ void gelu_forward_kernel(bf16* out, const bf16* inp, std::size_t packs) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < packs;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    float x[P];
    load_bf16<P>(x, inp + i * P);
#pragma unroll
    for (int k = 0; k < P; ++k) x[k] = gelu(x[k]);
    store_bf16<P>(out + i * P, x);
  }
}

template <int P>
__global__ void gelu_backward_kernel(bf16* dinp, const bf16* inp, const bf16* dout,
                                     std::size_t packs) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < packs;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    float x[P], g[P];
    load_bf16<P>(x, inp + i * P);
    load_bf16<P>(g, dout + i * P);
#pragma unroll
    for (int k = 0; k < P; ++k) g[k] *= gelu_grad(x[k]);
    store_bf16<P>(dinp + i * P, g);
  }
}

}  // namespace

void gelu_forward(bf16* out, const bf16* inp, std::size_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (n % 8 == 0 && aligned16(out) && aligned16(inp))
    gelu_forward_kernel<8><<<grid_for(n / 8, 256), 256, 0, stream>>>(out, inp, n / 8);
  else
    gelu_forward_kernel<1><<<grid_for(n, 256), 256, 0, stream>>>(out, inp, n);
  BTM_CUDA_CHECK_LAUNCH();
}

void gelu_backward(bf16* dinp, const bf16* inp, const bf16* dout, std::size_t n,
                   cudaStream_t stream) {
  if (n == 0) return;
  if (n % 8 == 0 && aligned16(dinp) && aligned16(inp) && aligned16(dout))
    gelu_backward_kernel<8><<<grid_for(n / 8, 256), 256, 0, stream>>>(dinp, inp, dout, n / 8);
  else
    gelu_backward_kernel<1><<<grid_for(n, 256), 256, 0, stream>>>(dinp, inp, dout, n);
  BTM_CUDA_CHECK_LAUNCH();
}

}  // namespace btm::cuda

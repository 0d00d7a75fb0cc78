// encoder.cu: the token and position embeddings (cuda/kernels/encoder.hpp). The backward sums
// the token embedding's gradient per token over its positions (TokenBuckets, a counting sort on
// the host) and the position embedding's over the batch, each element by one thread in a fixed
// order: no atomics.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "btm/cuda/check.hpp"
#include "btm/cuda/kernels/encoder.hpp"
#include "common.cuh"

namespace btm::cuda {
namespace {

template <int P>
__global__ void encoder_forward_kernel(bf16* out, const std::int32_t* inp, const bf16* wte,
                                       const bf16* wpe, int B, int T, int C) {
  const int packs = C / P;
  const std::size_t total = static_cast<std::size_t>(B) * T * packs;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t row = i / packs;
    const int c = static_cast<int>(i % packs) * P;
    const int t = static_cast<int>(row % T);
    float a[P], b[P];
    load_bf16<P>(a, wte + static_cast<std::size_t>(inp[row]) * C + c);
    load_bf16<P>(b, wpe + static_cast<std::size_t>(t) * C + c);
#pragma unroll
    for (int k = 0; k < P; ++k) a[k] += b[k];
    store_bf16<P>(out + row * C + c, a);
  }
}

__global__ void encoder_backward_wte_kernel(float* dwte, const bf16* dout,
                                            const std::int32_t* bucket_tokens,
                                            const std::int32_t* bucket_offsets,
                                            const std::int32_t* positions, int C) {
  const int u = blockIdx.x;
  const std::size_t token = static_cast<std::size_t>(bucket_tokens[u]);
  const int begin = bucket_offsets[u], end = bucket_offsets[u + 1];
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float acc = 0;
    for (int i = begin; i < end; ++i)
      acc += __bfloat162float(dout[static_cast<std::size_t>(positions[i]) * C + c]);
    dwte[token * C + c] += acc;
  }
}

__global__ void encoder_backward_wpe_kernel(float* dwpe, const bf16* dout, int B, int T, int C) {
  const std::size_t total = static_cast<std::size_t>(T) * C;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    float acc = 0;
    for (int b = 0; b < B; ++b)
      acc += __bfloat162float(dout[static_cast<std::size_t>(b) * total + i]);
    dwpe[i] += acc;
  }
}

}  // namespace

void encoder_forward(bf16* out, const std::int32_t* inp, const bf16* wte, const bf16* wpe, int B,
                     int T, int C, cudaStream_t stream) {
  const std::size_t rows = static_cast<std::size_t>(B) * T;
  if (C % 8 == 0 && aligned16(out) && aligned16(wte) && aligned16(wpe)) {
    encoder_forward_kernel<8>
        <<<grid_for(rows * C / 8, 256), 256, 0, stream>>>(out, inp, wte, wpe, B, T, C);
  } else {
    encoder_forward_kernel<1>
        <<<grid_for(rows * C, 256), 256, 0, stream>>>(out, inp, wte, wpe, B, T, C);
  }
  BTM_CUDA_CHECK_LAUNCH();
}

void TokenBuckets::build(const std::int32_t* inp, std::size_t n, int vocab) {
  std::vector<std::int32_t> counts(static_cast<std::size_t>(vocab) + 1, 0);
  for (std::size_t i = 0; i < n; ++i) ++counts[static_cast<std::size_t>(inp[i]) + 1];
  tokens.clear();
  offsets.assign(1, 0);
  for (int t = 0; t < vocab; ++t)
    if (counts[static_cast<std::size_t>(t) + 1] > 0) {
      tokens.push_back(t);
      offsets.push_back(offsets.back() + counts[static_cast<std::size_t>(t) + 1]);
    }
  // counts[t] becomes the first slot of token t (exclusive prefix sum over all ids).
  for (int t = 0; t < vocab; ++t) counts[static_cast<std::size_t>(t) + 1] += counts[t];
  positions.assign(n, 0);
  for (std::size_t i = 0; i < n; ++i)
    positions[static_cast<std::size_t>(counts[static_cast<std::size_t>(inp[i])]++)] =
        static_cast<std::int32_t>(i);
}

void encoder_backward_wte(float* dwte, const bf16* dout, const std::int32_t* bucket_tokens,
                          const std::int32_t* bucket_offsets, const std::int32_t* positions,
                          int num_buckets, int C, cudaStream_t stream) {
  if (num_buckets == 0) return;
  const int threads = std::min(256, (C + 31) / 32 * 32);
  encoder_backward_wte_kernel<<<num_buckets, threads, 0, stream>>>(dwte, dout, bucket_tokens,
                                                                   bucket_offsets, positions, C);
  BTM_CUDA_CHECK_LAUNCH();
}

void encoder_backward_wpe(float* dwpe, const bf16* dout, int B, int T, int C, cudaStream_t stream) {
  const std::size_t total = static_cast<std::size_t>(T) * C;
  encoder_backward_wpe_kernel<<<grid_for(total, 256), 256, 0, stream>>>(dwpe, dout, B, T, C);
  BTM_CUDA_CHECK_LAUNCH();
}

}  // namespace btm::cuda

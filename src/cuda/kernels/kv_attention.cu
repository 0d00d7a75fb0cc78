// kv_attention.cu: attention of new positions over the key/value cache (cuda/kernels/
// kv_attention.hpp). Two kernels: the new keys and values into the cache, then one block of
// 128 threads per (sequence, head, query): scores by warps (lanes over the head's dimensions,
// one key per warp at a time), the softmax in shared memory, the output by (key group, dim)
// threads summed over the groups in order. Every sum has a fixed order: deterministic.
#include <cstddef>
#include <stdexcept>
#include <string>

#include "btm/cuda/check.hpp"
#include "btm/cuda/kernels/kv_attention.hpp"
#include "common.cuh"

namespace btm::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / kWarp;

__global__ void kv_cache_write_kernel(bf16* k_cache, bf16* v_cache, const bf16* qkv, int B, int n,
                                      int pos, int cap, int C, int NH) {
  const int hs = C / NH;
  const std::size_t total = static_cast<std::size_t>(B) * n * C;
  for (std::size_t e = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t row = e / C;  // b * n + i
    const int c = static_cast<int>(e % C);
    const int b = static_cast<int>(row / n), i = static_cast<int>(row % n);
    const int h = c / hs, d = c % hs;
    const std::size_t at =
        ((static_cast<std::size_t>(b) * NH + h) * cap + static_cast<std::size_t>(pos + i)) * hs + d;
    k_cache[at] = qkv[row * 3 * C + C + c];
    v_cache[at] = qkv[row * 3 * C + 2 * C + c];
  }
}

// Block (b*NH + h, i). Shared: scores[cap] | q[hs] | partial[max(kThreads, hs)] | reduce[kWarps].
__global__ void kv_attention_kernel(bf16* out, const bf16* k_cache, const bf16* v_cache,
                                    const bf16* qkv, int n, int pos, int cap, int C, int NH,
                                    float scale) {
  extern __shared__ float shared[];
  const int hs = C / NH;
  const int bh = blockIdx.x, i = blockIdx.y;
  const int b = bh / NH, h = bh % NH;
  const int keys = pos + i + 1;
  float* scores = shared;
  float* q = scores + cap;
  float* partial = q + hs;
  float* reduce = partial + (hs > kThreads ? hs : kThreads);
  const int tid = threadIdx.x, warp = tid / kWarp, lane = tid % kWarp;
  const std::size_t row = static_cast<std::size_t>(b) * n + i;
  for (int d = tid; d < hs; d += kThreads) q[d] = __bfloat162float(qkv[row * 3 * C + h * hs + d]);
  __syncthreads();
  const bf16* kc = k_cache + static_cast<std::size_t>(bh) * cap * hs;
  const bf16* vc = v_cache + static_cast<std::size_t>(bh) * cap * hs;
  for (int j = warp; j < keys; j += kWarps) {
    float dot = 0;
    for (int d = lane; d < hs; d += kWarp)
      dot += q[d] * __bfloat162float(kc[static_cast<std::size_t>(j) * hs + d]);
    dot = warp_sum(dot);
    if (lane == 0) scores[j] = dot * scale;
  }
  __syncthreads();
  // The maximum, then the exponentials and their sum, each over a fixed partition.
  float m = -INFINITY;
  for (int j = tid; j < keys; j += kThreads) m = fmaxf(m, scores[j]);
  m = warp_max(m);
  if (lane == 0) reduce[warp] = m;
  __syncthreads();
  m = reduce[0];
  for (int w = 1; w < kWarps; ++w) m = fmaxf(m, reduce[w]);
  __syncthreads();
  float s = 0;
  for (int j = tid; j < keys; j += kThreads) {
    const float p = __expf(scores[j] - m);
    scores[j] = p;
    s += p;
  }
  s = warp_sum(s);
  if (lane == 0) reduce[warp] = s;
  __syncthreads();
  float sum = 0;
  for (int w = 0; w < kWarps; ++w) sum += reduce[w];
  // Thread (g, d) sums keys j = g, g + groups, ... of dimension d; then the groups in order.
  const int groups = hs >= kThreads ? 1 : kThreads / hs;
  for (int e = tid; e < groups * hs; e += kThreads) {
    const int g = e / hs, d = e % hs;
    float acc = 0;
    for (int j = g; j < keys; j += groups)
      acc += scores[j] * __bfloat162float(vc[static_cast<std::size_t>(j) * hs + d]);
    partial[e] = acc;
  }
  __syncthreads();
  const float inv = 1.0f / sum;
  for (int d = tid; d < hs; d += kThreads) {
    float acc = 0;
    for (int g = 0; g < groups; ++g) acc += partial[g * hs + d];
    out[row * C + h * hs + d] = __float2bfloat16(acc * inv);
  }
}

}  // namespace

void kv_attention_forward(bf16* out, bf16* k_cache, bf16* v_cache, const bf16* qkv, int B, int n,
                          int pos, int cap, int C, int NH, cudaStream_t stream) {
  const int hs = C / NH;
  if (B < 1 || n < 1 || pos < 0 || pos + n > cap || cap > kKvAttentionMaxCapacity || hs * NH != C)
    throw std::invalid_argument("kv_attention_forward: B=" + std::to_string(B) +
                                " n=" + std::to_string(n) + " pos=" + std::to_string(pos) +
                                " cap=" + std::to_string(cap) + " C=" + std::to_string(C) +
                                " NH=" + std::to_string(NH) + " is not a valid shape");
  const std::size_t elements = static_cast<std::size_t>(B) * n * C;
  kv_cache_write_kernel<<<grid_for(elements, 256), 256, 0, stream>>>(k_cache, v_cache, qkv, B, n,
                                                                     pos, cap, C, NH);
  BTM_CUDA_CHECK_LAUNCH();
  const std::size_t shared =
      (static_cast<std::size_t>(cap) + hs + (hs > kThreads ? hs : kThreads) + kWarps) *
      sizeof(float);
  const dim3 grid(static_cast<unsigned>(B * NH), static_cast<unsigned>(n));
  const float scale = 1.0f / sqrtf(static_cast<float>(hs));
  kv_attention_kernel<<<grid, kThreads, shared, stream>>>(out, k_cache, v_cache, qkv, n, pos, cap,
                                                          C, NH, scale);
  BTM_CUDA_CHECK_LAUNCH();
}

}  // namespace btm::cuda

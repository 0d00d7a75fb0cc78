// crossentropy.cu: the classifier's softmax and cross-entropy (cuda/kernels/crossentropy.hpp),
// one block per row: the logits read once from registers where a row fits, else in two passes;
// fp32 logits (evaluation) with streaming 16-byte loads.
#include <cstdint>
#include <type_traits>

#include "btm/cuda/check.hpp"
#include "btm/cuda/kernels/crossentropy.hpp"
#include "common.cuh"

namespace btm::cuda {
namespace {

template <typename LogitT>
__device__ __forceinline__ float to_float(LogitT x) {
  if constexpr (std::is_same_v<LogitT, float>)
    return x;
  else
    return __bfloat162float(x);
}

// (max, sum of exp(x - max)) pairs merged across the block; every thread gets the result.
__device__ void block_softmax_stats(float& maxv, float& sum) {
  __shared__ float shared_max[32], shared_sum[32];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int warps = blockDim.x / kWarp;
  float m = warp_max(maxv);
  float s = warp_sum(maxv == -INFINITY ? 0.0f : sum * __expf(maxv - m));
  if (lane == 0) {
    shared_max[warp] = m;
    shared_sum[warp] = s;
  }
  __syncthreads();
  float bm = -INFINITY;
  for (int i = 0; i < warps; ++i) bm = fmaxf(bm, shared_max[i]);
  float bs = 0;
  for (int i = 0; i < warps; ++i)
    if (shared_max[i] != -INFINITY) bs += shared_sum[i] * __expf(shared_max[i] - bm);
  maxv = bm;
  sum = bs;
}

// Folds N values into a thread's running (max, sum of exp(x - max)); -inf values (padding, or
// columns past V) add nothing.
template <int N>
__device__ __forceinline__ void softmax_stats_add(float& maxv, float& sum, const float (&v)[N]) {
  float new_max = maxv;
#pragma unroll
  for (int i = 0; i < N; ++i) new_max = fmaxf(new_max, v[i]);
  if (new_max == -INFINITY) return;  // nothing but -inf so far
  float s = maxv == -INFINITY ? 0.0f : sum * __expf(maxv - new_max);
#pragma unroll
  for (int i = 0; i < N; ++i) s += __expf(v[i] - new_max);
  maxv = new_max;
  sum = s;
}

// One block per row, two passes over the row in memory (stats, then gradient): the fallback of
// crossentropy_registers_kernel for rows too long for the registers or not in 16-byte packs, and
// of crossentropy_f32_kernel for fp32 rows not in 16-byte packs. P consecutive logits per
// access (P == 8 needs Vp % 8 == 0).
template <typename LogitT, int P>
__global__ void crossentropy_kernel(float* losses, bf16* dlogits, const LogitT* logits,
                                    const std::int32_t* targets, int V, int Vp, float dloss) {
  const std::size_t row = blockIdx.x;
  const LogitT* x = logits + row * Vp;
  const int target = targets[row];
  const float target_logit = to_float(x[target]);  // read before any write to the row
  float maxv = -INFINITY, sum = 0;
  for (int j = threadIdx.x * P; j < V; j += blockDim.x * P) {
    float v[P];
    if constexpr (P == 8 && !std::is_same_v<LogitT, float>) {
      load_bf16<8>(v, reinterpret_cast<const bf16*>(x) + j);
    } else {
#pragma unroll
      for (int k = 0; k < P; ++k) v[k] = j + k < V ? to_float(x[j + k]) : -INFINITY;
    }
#pragma unroll
    for (int k = 0; k < P; ++k)
      if (j + k >= V) v[k] = -INFINITY;
    softmax_stats_add(maxv, sum, v);
  }
  block_softmax_stats(maxv, sum);
  const float lse = maxv + logf(sum);
  if (threadIdx.x == 0) losses[row] = lse - target_logit;
  if (dlogits == nullptr) return;
  __syncthreads();  // every thread has read its logits (and the target logit) before any write
  bf16* d = dlogits + row * Vp;
  for (int j = threadIdx.x * P; j < Vp; j += blockDim.x * P) {
    float v[P];
    if constexpr (P == 8 && !std::is_same_v<LogitT, float>) {
      load_bf16<8>(v, reinterpret_cast<const bf16*>(x) + j);
    } else {
#pragma unroll
      for (int k = 0; k < P; ++k) v[k] = to_float(x[j + k]);
    }
#pragma unroll
    for (int k = 0; k < P; ++k) {
      const int col = j + k;
      const float p = col < V ? __expf(v[k] - lse) : 0.0f;
      v[k] = col < V ? (p - (col == target ? 1.0f : 0.0f)) * dloss : 0.0f;
    }
    store_bf16<P>(d + j, v);
  }
}

// Evaluation's loss from fp32 logits, one block per row, the row read once: kUnroll 16-byte
// streaming loads per thread are issued together (the bytes in flight a bandwidth-bound kernel
// needs), then merged into the thread's running (max, sum). Columns in [V, Vp) are -inf. Needs
// Vp % 4 == 0 and 16-byte aligned rows; crossentropy_kernel<float, 4> covers the rest.
constexpr int kLogprobThreads = 512;
__global__ void __launch_bounds__(kLogprobThreads)
    crossentropy_f32_kernel(float* losses, const float* logits, const std::int32_t* targets, int V,
                            int Vp) {
  constexpr int kUnroll = 4;
  const std::size_t row = blockIdx.x;
  const float4* x = reinterpret_cast<const float4*>(logits + row * Vp);
  const int packs = Vp / 4;
  float maxv = -INFINITY, sum = 0;
  for (int base = threadIdx.x; base < packs; base += kUnroll * kLogprobThreads) {
    float v[kUnroll * 4];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int pack = base + u * kLogprobThreads;
      const float4 f =
          pack < packs ? __ldcs(x + pack) : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
      v[4 * u] = f.x, v[4 * u + 1] = f.y, v[4 * u + 2] = f.z, v[4 * u + 3] = f.w;
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (pack * 4 + k >= V) v[4 * u + k] = -INFINITY;
    }
    softmax_stats_add(maxv, sum, v);
  }
  block_softmax_stats(maxv, sum);
  if (threadIdx.x == 0) losses[row] = maxv + logf(sum) - logits[row * Vp + targets[row]];
}

// One block per row with the row in registers: each thread holds kPacks 16-byte packs (packs
// threadIdx.x + k * blockDim.x), so the logits are read from memory once and the gradient is
// written from the registers. Columns in [V, Vp) are held as -inf: they add nothing to the max
// and the sum, and their gradient is written as 0. Needs Vp % 8 == 0 and 16-byte aligned rows.
constexpr int kCrossEntropyThreads = 1024;
// 7 packs (28 registers of logits) per thread keep the kernel within the 64 registers a
// 1024-thread block allows: rows of up to 7 * 1024 * 8 = 57344 logits (GPT-2: 50304).
constexpr int kCrossEntropyMaxPacks = 7;

template <int kPacks>
__global__ void __launch_bounds__(kCrossEntropyThreads)
    crossentropy_registers_kernel(float* losses, bf16* dlogits, const bf16* logits,
                                  const std::int32_t* targets, int V, int Vp, float dloss) {
  const std::size_t row = blockIdx.x;
  const bf16* x = logits + row * Vp;
  const int target = targets[row];
  // Read before the block's first barrier (in block_softmax_stats), so before any write.
  const float target_logit = threadIdx.x == 0 ? __bfloat162float(x[target]) : 0.0f;
  const int packs = Vp / 8;
  int4 raw[kPacks];
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int j = (threadIdx.x + k * blockDim.x) * 8;
    const int all_neg_inf = static_cast<int>(0xFF80FF80u);
    raw[k] = make_int4(all_neg_inf, all_neg_inf, all_neg_inf, all_neg_inf);
    if (j < V) raw[k] = *reinterpret_cast<const int4*>(x + j);
  }
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {  // after all loads are issued: this waits for the data
    const int j = (threadIdx.x + k * blockDim.x) * 8;
    if (j < V && j + 8 > V) {  // the one pack holding both column V - 1 and padding
      bf16* h = reinterpret_cast<bf16*>(&raw[k]);
#pragma unroll
      for (int i = 0; i < 8; ++i)
        if (j + i >= V) h[i] = __ushort_as_bfloat16(0xFF80);  // -inf
    }
  }
  // This thread's max, then its sum of exp(x - max): one exp per logit; the block merges them.
  // The max is taken on the bf16 pairs (exact): fp32 copies made here would be kept live for
  // the later passes and spill.
  __nv_bfloat162 max2 = __bfloat162bfloat162(__ushort_as_bfloat16(0xFF80));
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const __nv_bfloat162* h2 = reinterpret_cast<const __nv_bfloat162*>(&raw[k]);
#pragma unroll
    for (int i = 0; i < 4; ++i) max2 = __hmax2(max2, h2[i]);
  }
  float maxv = fmaxf(__low2float(max2), __high2float(max2));
  float sum = 0;
  if (maxv != -INFINITY) {
#pragma unroll
    for (int k = 0; k < kPacks; ++k) {
      float v[8];
      unpack_bf16x8(v, raw[k]);
#pragma unroll
      for (int i = 0; i < 8; ++i) sum += __expf(v[i] - maxv);
    }
  }
  block_softmax_stats(maxv, sum);
  const float lse = maxv + logf(sum);
  if (threadIdx.x == 0) losses[row] = lse - target_logit;
  if (dlogits == nullptr) return;
  bf16* d = dlogits + row * Vp;
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int p = threadIdx.x + k * blockDim.x;
    if (p >= packs) break;
    const int j = p * 8;
    float v[8];
    unpack_bf16x8(v, raw[k]);
#pragma unroll
    for (int i = 0; i < 8; ++i)
      v[i] = (__expf(v[i] - lse) - (j + i == target ? 1.0f : 0.0f)) * dloss;
    if (j + 8 > V) {  // padding: exactly 0 (exp(-inf) * dloss could be -0)
#pragma unroll
      for (int i = 0; i < 8; ++i)
        if (j + i >= V) v[i] = 0.0f;
    }
    store_bf16<8>(d + j, v);
  }
}

}  // namespace

namespace {
// The register kernel with the fewest packs per thread that hold a row of `packs` packs (and as
// few threads as then cover it); false if a row exceeds kCrossEntropyMaxPacks per thread.
template <int kPacks>
bool launch_crossentropy_registers(int packs, float* losses, bf16* dlogits, const bf16* logits,
                                   const std::int32_t* targets, int N, int V, int Vp, float dloss,
                                   cudaStream_t stream) {
  if (packs <= kPacks * kCrossEntropyThreads) {
    const int per_thread = (packs + kPacks - 1) / kPacks;
    const int threads = (per_thread + kWarp - 1) / kWarp * kWarp;
    crossentropy_registers_kernel<kPacks>
        <<<N, threads, 0, stream>>>(losses, dlogits, logits, targets, V, Vp, dloss);
    BTM_CUDA_CHECK_LAUNCH();
    return true;
  }
  if constexpr (kPacks < kCrossEntropyMaxPacks)
    return launch_crossentropy_registers<kPacks + 1>(packs, losses, dlogits, logits, targets, N, V,
                                                     Vp, dloss, stream);
  else
    return false;
}
}  // namespace

void crossentropy_forward_backward(float* losses, bf16* dlogits, const bf16* logits,
                                   const std::int32_t* targets, int N, int V, int Vp, float dloss,
                                   cudaStream_t stream) {
  if (N == 0) return;
  const bool vector =
      Vp % 8 == 0 && aligned16(logits) && (dlogits == nullptr || aligned16(dlogits));
  // One read of each row from registers where it fits; else the two-pass kernel (reads twice).
  if (vector && launch_crossentropy_registers<1>(Vp / 8, losses, dlogits, logits, targets, N, V, Vp,
                                                 dloss, stream))
    return;
  if (vector)
    crossentropy_kernel<bf16, 8>
        <<<N, 1024, 0, stream>>>(losses, dlogits, logits, targets, V, Vp, dloss);
  else
    crossentropy_kernel<bf16, 1>
        <<<N, 1024, 0, stream>>>(losses, dlogits, logits, targets, V, Vp, dloss);
  BTM_CUDA_CHECK_LAUNCH();
}

void crossentropy_forward(float* losses, const float* logits, const std::int32_t* targets, int N,
                          int V, int Vp, cudaStream_t stream) {
  if (N == 0) return;
  if (Vp % 4 == 0 && aligned16(logits))
    crossentropy_f32_kernel<<<N, kLogprobThreads, 0, stream>>>(losses, logits, targets, V, Vp);
  else
    crossentropy_kernel<float, 4>
        <<<N, 1024, 0, stream>>>(losses, nullptr, logits, targets, V, Vp, 0.0f);
  BTM_CUDA_CHECK_LAUNCH();
}

}  // namespace btm::cuda

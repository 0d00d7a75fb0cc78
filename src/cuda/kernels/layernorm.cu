// layernorm.cu: LayerNorm forward and backward (cuda/kernels/layernorm.hpp). The forward runs a
// warp per row; the backward's weight and bias gradients are per-block partial sums that a
// second kernel adds in block order (no atomics), so the results are bitwise reproducible.
#include <algorithm>
#include <cstddef>

#include "btm/cuda/check.hpp"
#include "btm/cuda/kernels/layernorm.hpp"
#include "common.cuh"

namespace btm::cuda {
namespace {

constexpr int kMaxLayerNormBlocks = 512;

// One warp per row; lane owns the packs lane, lane + 32, ... of P channels.

template <int P>
__global__ void layernorm_forward_kernel(bf16* out, float* mean, float* rstd, const bf16* inp,
                                         const bf16* w, const bf16* bias, int N, int C) {
  const int warps = blockDim.x / kWarp;
  const int row = blockIdx.x * warps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= N) return;
  const std::size_t base = static_cast<std::size_t>(row) * C;
  const bf16* x = inp + base;
  float sum = 0;
  for (int c = lane * P; c < C; c += kWarp * P) {
    float v[P];
    load_bf16<P>(v, x + c);
#pragma unroll
    for (int k = 0; k < P; ++k) sum += v[k];
  }
  const float m = warp_sum(sum) / C;
  float var = 0;
  for (int c = lane * P; c < C; c += kWarp * P) {
    float v[P];
    load_bf16<P>(v, x + c);
#pragma unroll
    for (int k = 0; k < P; ++k) var += (v[k] - m) * (v[k] - m);
  }
  const float s = rsqrtf(warp_sum(var) / C + 1e-5f);
  for (int c = lane * P; c < C; c += kWarp * P) {
    float v[P], wv[P], bv[P];
    load_bf16<P>(v, x + c);
    load_bf16<P>(wv, w + c);
    load_bf16<P>(bv, bias + c);
#pragma unroll
    for (int k = 0; k < P; ++k) v[k] = (v[k] - m) * s * wv[k] + bv[k];
    store_bf16<P>(out + base + c, v);
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = s;
  }
}

// The backward: dinp = (g*w - mean(g*w) - xhat * mean(g*w*xhat)) * rstd per row, and the
// column sums dw = sum(g * xhat), db = sum(g). Both kernels write per-block partial sums
// partial[block][2C] (dw | db) that layernorm_backward_reduce_kernel adds in block order.
//
// The register kernel (C <= 32 * P * kPacks): one warp per row, rows grid-strided over all the
// grid's warps, lane owning the packs lane, lane + 32, ... of P channels. dout, inp (and the old
// dinp when accumulating) are read once into registers and dinp written once; a lane's channels
// are the same in every row, so its dw, db sums stay in registers over all its rows and meet
// the other warps' only at the end, in a fixed order.
template <int P>
struct RawPack;
template <>
struct RawPack<8> {
  int4 v;
};
template <>
struct RawPack<1> {
  bf16 v;
};
template <int P>
__device__ __forceinline__ RawPack<P> load_raw(const bf16* src) {
  RawPack<P> r;
  if constexpr (P == 8)
    r.v = *reinterpret_cast<const int4*>(src);
  else
    r.v = *src;
  return r;
}
template <int P>
__device__ __forceinline__ void unpack(float (&out)[P], const RawPack<P>& r) {
  const bf16* h = reinterpret_cast<const bf16*>(&r.v);
#pragma unroll
  for (int i = 0; i < P; ++i) out[i] = __bfloat162float(h[i]);
}

// One pack of P columns of a LayerNorm backward row: its share of the row sums of g*w and
// g*w*xhat, and of the weight and bias gradients dw += g*xhat, db += g.
template <int P>
__device__ __forceinline__ void layernorm_backward_pack_sums(const float (&g)[P],
                                                             const float (&x)[P],
                                                             const float (&wv)[P], float m, float s,
                                                             float& sum_gw, float& sum_gw_xhat,
                                                             float* dw, float* db) {
#pragma unroll
  for (int k = 0; k < P; ++k) {
    const float xhat = (x[k] - m) * s;
    const float gw = g[k] * wv[k];
    sum_gw += gw;
    sum_gw_xhat += gw * xhat;
    dw[k] += g[k] * xhat;
    db[k] += g[k];
  }
}

// The input gradient of one pack: d += (g*w - mean(g*w) - xhat * mean(g*w*xhat)) * rstd.
template <int P>
__device__ __forceinline__ void layernorm_backward_pack_dinp(float (&d)[P], const float (&g)[P],
                                                             const float (&x)[P],
                                                             const float (&wv)[P], float m, float s,
                                                             float mean_gw, float mean_gw_xhat) {
#pragma unroll
  for (int k = 0; k < P; ++k) {
    const float xhat = (x[k] - m) * s;
    d[k] += (g[k] * wv[k] - mean_gw - xhat * mean_gw_xhat) * s;
  }
}

template <int P, int kPacks>
__global__ void __launch_bounds__(256)
    layernorm_backward_registers_kernel(bf16* dinp, float* partial, const bf16* dout,
                                        const bf16* inp, const bf16* w, const float* mean,
                                        const float* rstd, int N, int C, bool accumulate) {
  extern __shared__ float block_sums[];  // [2C]: dw | db of the block
  const int warps = blockDim.x / kWarp;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  float dw_acc[kPacks][P], db_acc[kPacks][P];
#pragma unroll
  for (int p = 0; p < kPacks; ++p)
#pragma unroll
    for (int k = 0; k < P; ++k) dw_acc[p][k] = db_acc[p][k] = 0;

  for (int row = blockIdx.x * warps + warp; row < N; row += gridDim.x * warps) {
    const std::size_t base = static_cast<std::size_t>(row) * C;
    // Every load of the row is issued before the first use (unrolled): one pass over memory.
    RawPack<P> g_raw[kPacks], x_raw[kPacks], old_raw[kPacks];
#pragma unroll
    for (int p = 0; p < kPacks; ++p) {
      const int c = (p * kWarp + lane) * P;
      if (c < C) {
        g_raw[p] = load_raw<P>(dout + base + c);
        x_raw[p] = load_raw<P>(inp + base + c);
        if (accumulate) old_raw[p] = load_raw<P>(dinp + base + c);
      }
    }
    const float m = mean[row], s = rstd[row];
    float sum_gw = 0, sum_gw_xhat = 0;
#pragma unroll
    for (int p = 0; p < kPacks; ++p) {
      const int c = (p * kWarp + lane) * P;
      if (c < C) {
        float g[P], x[P], wv[P];
        unpack<P>(g, g_raw[p]);
        unpack<P>(x, x_raw[p]);
        load_bf16<P>(wv, w + c);
        layernorm_backward_pack_sums<P>(g, x, wv, m, s, sum_gw, sum_gw_xhat, dw_acc[p], db_acc[p]);
      }
    }
    const float mean_gw = warp_sum(sum_gw) / C;
    const float mean_gw_xhat = warp_sum(sum_gw_xhat) / C;
#pragma unroll
    for (int p = 0; p < kPacks; ++p) {
      const int c = (p * kWarp + lane) * P;
      if (c < C) {
        float g[P], x[P], wv[P], d[P];
        unpack<P>(g, g_raw[p]);
        unpack<P>(x, x_raw[p]);
        load_bf16<P>(wv, w + c);
        if (accumulate) {
          unpack<P>(d, old_raw[p]);
        } else {
#pragma unroll
          for (int k = 0; k < P; ++k) d[k] = 0;
        }
        layernorm_backward_pack_dinp<P>(d, g, x, wv, m, s, mean_gw, mean_gw_xhat);
        store_bf16<P>(dinp + base + c, d);
      }
    }
  }

  // The warps add their sums into block_sums one after the other, in warp order.
  for (int i = threadIdx.x; i < 2 * C; i += blockDim.x) block_sums[i] = 0;
  __syncthreads();
  for (int turn = 0; turn < warps; ++turn) {
    if (warp == turn) {
#pragma unroll
      for (int p = 0; p < kPacks; ++p) {
        const int c = (p * kWarp + lane) * P;
        if (c < C)
#pragma unroll
          for (int k = 0; k < P; ++k) {
            block_sums[c + k] += dw_acc[p][k];
            block_sums[C + c + k] += db_acc[p][k];
          }
      }
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < 2 * C; i += blockDim.x)
    partial[static_cast<std::size_t>(blockIdx.x) * 2 * C + i] = block_sums[i];
}

// The fallback for rows too long for the register kernel: each warp accumulates dw, db of its
// rows in its own shared slice [2C] and reads the row twice; the block adds its warps' slices
// in order into partial[blockIdx.x][2C].
template <int P>
__global__ void layernorm_backward_shared_kernel(bf16* dinp, float* partial, const bf16* dout,
                                                 const bf16* inp, const bf16* w, const float* mean,
                                                 const float* rstd, int N, int C, bool accumulate) {
  extern __shared__ float shared[];
  const int warps = blockDim.x / kWarp;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  float* dw_acc = shared + static_cast<std::size_t>(warp) * 2 * C;
  float* db_acc = dw_acc + C;
  for (int c = lane * P; c < C; c += kWarp * P)
#pragma unroll
    for (int k = 0; k < P; ++k) dw_acc[c + k] = db_acc[c + k] = 0;

  for (int row = blockIdx.x * warps + warp; row < N; row += gridDim.x * warps) {
    const std::size_t base = static_cast<std::size_t>(row) * C;
    const float m = mean[row], s = rstd[row];
    float sum_gw = 0, sum_gw_xhat = 0;
    for (int c = lane * P; c < C; c += kWarp * P) {
      float g[P], x[P], wv[P];
      load_bf16<P>(g, dout + base + c);
      load_bf16<P>(x, inp + base + c);
      load_bf16<P>(wv, w + c);
      layernorm_backward_pack_sums<P>(g, x, wv, m, s, sum_gw, sum_gw_xhat, dw_acc + c, db_acc + c);
    }
    const float mean_gw = warp_sum(sum_gw) / C;
    const float mean_gw_xhat = warp_sum(sum_gw_xhat) / C;
    for (int c = lane * P; c < C; c += kWarp * P) {
      float g[P], x[P], wv[P], d[P];
      load_bf16<P>(g, dout + base + c);
      load_bf16<P>(x, inp + base + c);
      load_bf16<P>(wv, w + c);
      if (accumulate) {
        load_bf16<P>(d, dinp + base + c);
      } else {
#pragma unroll
        for (int k = 0; k < P; ++k) d[k] = 0;
      }
      layernorm_backward_pack_dinp<P>(d, g, x, wv, m, s, mean_gw, mean_gw_xhat);
      store_bf16<P>(dinp + base + c, d);
    }
  }
  __syncthreads();
  for (int c = threadIdx.x; c < 2 * C; c += blockDim.x) {
    float acc = 0;
    for (int i = 0; i < warps; ++i) acc += shared[static_cast<std::size_t>(i) * 2 * C + c];
    partial[static_cast<std::size_t>(blockIdx.x) * 2 * C + c] = acc;
  }
}

// Block (32, 16): 32 of the 2C columns; row lane y sums blocks y, y + 16, ..., then lane 0 adds
// the 16 lane sums in order.
__global__ void layernorm_backward_reduce_kernel(float* dw, float* db, const float* partial,
                                                 int blocks, int C) {
  __shared__ float sums[kReduceLanes][kWarp + 1];
  const int c = blockIdx.x * kWarp + threadIdx.x;
  float acc = 0;
  if (c < 2 * C)
    for (int i = threadIdx.y; i < blocks; i += kReduceLanes)
      acc += partial[static_cast<std::size_t>(i) * 2 * C + c];
  sums[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || c >= 2 * C) return;
  float total = 0;
  for (int i = 0; i < kReduceLanes; ++i) total += sums[i][threadIdx.x];
  if (c < C)
    dw[c] += total;
  else
    db[c - C] += total;
}

}  // namespace

void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const bf16* w,
                       const bf16* b, int N, int C, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const unsigned blocks = static_cast<unsigned>((N + kThreads / kWarp - 1) / (kThreads / kWarp));
  if (C % 8 == 0 && aligned16(out) && aligned16(inp) && aligned16(w) && aligned16(b))
    layernorm_forward_kernel<8><<<blocks, kThreads, 0, stream>>>(out, mean, rstd, inp, w, b, N, C);
  else
    layernorm_forward_kernel<1><<<blocks, kThreads, 0, stream>>>(out, mean, rstd, inp, w, b, N, C);
  BTM_CUDA_CHECK_LAUNCH();
}

std::size_t layernorm_backward_scratch_floats(int C) {
  return static_cast<std::size_t>(kMaxLayerNormBlocks) * 2 * C;
}

namespace {
constexpr int kLayerNormThreads = 256;
// The most packs per lane the register kernel is instantiated for (C <= 2048 with 8-bf16 packs,
// C <= 1024 with single bf16).
constexpr int kMaxPacksVector = 8;
constexpr int kMaxPacksScalar = 32;

// Launches the register kernel with as many blocks as fit on the GPU at once (each then loops
// over rows), at most one warp per row and kMaxLayerNormBlocks; returns the block count.
template <int P, int kPacks>
int launch_layernorm_backward_registers(bf16* dinp, float* scratch, const bf16* dout,
                                        const bf16* inp, const bf16* w, const float* mean,
                                        const float* rstd, int N, int C, bool accumulate,
                                        cudaStream_t stream) {
  const auto kernel = layernorm_backward_registers_kernel<P, kPacks>;
  const std::size_t shared = static_cast<std::size_t>(2) * C * sizeof(float);
  int per_sm = 0;
  BTM_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kLayerNormThreads, shared));
  constexpr int warps = kLayerNormThreads / kWarp;
  const int blocks = std::clamp((N + warps - 1) / warps, 1,
                                std::min(kMaxLayerNormBlocks, std::max(1, per_sm) * sm_count()));
  kernel<<<blocks, kLayerNormThreads, shared, stream>>>(dinp, scratch, dout, inp, w, mean, rstd, N,
                                                        C, accumulate);
  BTM_CUDA_CHECK_LAUNCH();
  return blocks;
}

// The register kernel instantiation for `packs` packs per lane (the smallest kPacks >= packs
// among those instantiated), or 0 blocks if there is none.
template <int P, int kPacks, int kMax>
int dispatch_layernorm_backward(int packs, bf16* dinp, float* scratch, const bf16* dout,
                                const bf16* inp, const bf16* w, const float* mean,
                                const float* rstd, int N, int C, bool accumulate,
                                cudaStream_t stream) {
  if (packs <= kPacks)
    return launch_layernorm_backward_registers<P, kPacks>(dinp, scratch, dout, inp, w, mean, rstd,
                                                          N, C, accumulate, stream);
  if constexpr (kPacks * 2 <= kMax && P == 1)
    return dispatch_layernorm_backward<P, kPacks * 2, kMax>(packs, dinp, scratch, dout, inp, w,
                                                            mean, rstd, N, C, accumulate, stream);
  else if constexpr (kPacks < kMax && P != 1)
    return dispatch_layernorm_backward<P, kPacks + 1, kMax>(packs, dinp, scratch, dout, inp, w,
                                                            mean, rstd, N, C, accumulate, stream);
  else
    return 0;
}

template <int P>
int launch_layernorm_backward_shared(bf16* dinp, float* scratch, const bf16* dout, const bf16* inp,
                                     const bf16* w, const float* mean, const float* rstd, int N,
                                     int C, bool accumulate, cudaStream_t stream) {
  // As many warps per block as fit 48 KiB of per-warp [2C] accumulators (at least one).
  const std::size_t per_warp = static_cast<std::size_t>(2) * C * sizeof(float);
  const int warps = static_cast<int>(std::clamp<std::size_t>(49152 / per_warp, 1, 8));
  const std::size_t shared = per_warp * warps;
  const int blocks =
      std::clamp((N + warps - 1) / warps, 1, std::min(kMaxLayerNormBlocks, 2 * sm_count()));
  if (shared > 49152)
    BTM_CUDA_CHECK(cudaFuncSetAttribute(layernorm_backward_shared_kernel<P>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(shared)));
  layernorm_backward_shared_kernel<P><<<blocks, warps * kWarp, shared, stream>>>(
      dinp, scratch, dout, inp, w, mean, rstd, N, C, accumulate);
  BTM_CUDA_CHECK_LAUNCH();
  return blocks;
}
}  // namespace

void layernorm_backward(bf16* dinp, float* dw, float* db, float* scratch, const bf16* dout,
                        const bf16* inp, const bf16* w, const float* mean, const float* rstd, int N,
                        int C, bool accumulate, cudaStream_t stream) {
  if (N == 0) return;
  const bool vector =
      C % 8 == 0 && aligned16(dinp) && aligned16(dout) && aligned16(inp) && aligned16(w);
  int blocks = 0;
  if (vector) {
    const int packs = (C + kWarp * 8 - 1) / (kWarp * 8);
    blocks = dispatch_layernorm_backward<8, 1, kMaxPacksVector>(
        packs, dinp, scratch, dout, inp, w, mean, rstd, N, C, accumulate, stream);
    if (blocks == 0)
      blocks = launch_layernorm_backward_shared<8>(dinp, scratch, dout, inp, w, mean, rstd, N, C,
                                                   accumulate, stream);
  } else {
    const int packs = (C + kWarp - 1) / kWarp;
    blocks = dispatch_layernorm_backward<1, 1, kMaxPacksScalar>(
        packs, dinp, scratch, dout, inp, w, mean, rstd, N, C, accumulate, stream);
    if (blocks == 0)
      blocks = launch_layernorm_backward_shared<1>(dinp, scratch, dout, inp, w, mean, rstd, N, C,
                                                   accumulate, stream);
  }
  const unsigned column_blocks = static_cast<unsigned>((2 * C + kWarp - 1) / kWarp);
  layernorm_backward_reduce_kernel<<<column_blocks, dim3(kWarp, kReduceLanes), 0, stream>>>(
      dw, db, scratch, blocks, C);
  BTM_CUDA_CHECK_LAUNCH();
}

}  // namespace btm::cuda

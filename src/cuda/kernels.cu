// kernels.cu: the CUDA engine's element-wise, normalisation, softmax, classifier and optimizer
// kernels (cuda/kernels.hpp). Memory-bound kernels move 16-byte packs of 8 bf16 where the row
// length allows it (a scalar variant covers other lengths). No kernel uses floating-point
// atomics: reductions that cross blocks write per-block partial sums that a second kernel adds
// in a fixed order, so results are bitwise reproducible.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "btm/cuda/check.hpp"
#include "btm/cuda/kernels.hpp"

namespace btm::cuda {
namespace {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kMaxLayerNormBlocks = 512;
constexpr int kMaxBiasChunks = 512;  // row chunks of the bias gradient (scratch rows)
constexpr int kSumSquaresBlocks = 1024;

int sm_count() {
  int device = 0, sms = 0;
  BTM_CUDA_CHECK(cudaGetDevice(&device));
  BTM_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

// Blocks for a grid-stride loop over `work` items: enough to fill the GPU, never more than needed.
unsigned grid_for(std::size_t work, int threads) {
  const std::size_t needed = (work + static_cast<std::size_t>(threads) - 1) / threads;
  return static_cast<unsigned>(std::clamp<std::size_t>(needed, 1, 65536));
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int offset = kWarp / 2; offset > 0; offset >>= 1)
    v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// The 8 bf16 of a 16-byte pack as floats.
__device__ __forceinline__ void unpack_bf16x8(float (&out)[8], int4 raw) {
  const bf16* h = reinterpret_cast<const bf16*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) out[i] = __bfloat162float(h[i]);
}

// P consecutive bf16 as floats; P == 8 is one 16-byte access (the address must be 16-aligned).
template <int P>
__device__ __forceinline__ void load_bf16(float (&out)[P], const bf16* src) {
  if constexpr (P == 8) {
    const int4 raw = *reinterpret_cast<const int4*>(src);  // one 16-byte load, then unpack
    unpack_bf16x8(out, raw);
  } else {
#pragma unroll
    for (int i = 0; i < P; ++i) out[i] = __bfloat162float(src[i]);
  }
}
template <int P>
__device__ __forceinline__ void store_bf16(bf16* dst, const float (&in)[P]) {
  if constexpr (P == 8) {
    int4 raw;
    bf16* h = reinterpret_cast<bf16*>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) h[i] = __float2bfloat16(in[i]);
    *reinterpret_cast<int4*>(dst) = raw;
  } else {
#pragma unroll
    for (int i = 0; i < P; ++i) dst[i] = __float2bfloat16(in[i]);
  }
}

bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

// ---- conversions -----------------------------------------------------------------------

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

// One block of 1024 threads; strided per-thread sums, then a fixed tree.
__global__ void mean_kernel(float* out, const float* values, int n) {
  __shared__ double partial[1024];
  double s = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += values[i];
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int width = blockDim.x / 2; width > 0; width >>= 1) {
    if (static_cast<int>(threadIdx.x) < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[0] = static_cast<float>(partial[0] / n);
}

// ---- encoder ---------------------------------------------------------------------------

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

// ---- LayerNorm -------------------------------------------------------------------------
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
constexpr int kReduceLanes = 16;
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

// ---- bias gradient ---------------------------------------------------------------------
// Block (32, kBiasLanes): lane x owns P adjacent columns (P == 8: one 16-byte load per row, so a
// warp reads 512 contiguous bytes of a row); row lane y sums rows r0 + y, r0 + y + kBiasLanes, ...
// of the block's chunk in order, kBiasUnroll loads in flight. The lanes' sums are then added in
// lane order: one partial sum per chunk and column.
constexpr int kBiasLanes = 8;
constexpr int kBiasThreads = kWarp * kBiasLanes;
constexpr int kBiasUnroll = 4;

template <int P>
__global__ void __launch_bounds__(kBiasThreads)
    bias_backward_partial_kernel(float* partial, const bf16* dout, int N, int OC,
                                 int rows_per_chunk) {
  constexpr int kColumns = kWarp * P;  // columns per block
  __shared__ float sums[kBiasLanes][kColumns];
  const int c0 = blockIdx.x * kColumns;
  const int c = c0 + threadIdx.x * P;  // P divides OC: a pack is all in or all out
  const int r0 = blockIdx.y * rows_per_chunk;
  const int r1 = min(N, r0 + rows_per_chunk);
  float acc[P] = {};
  if (c < OC) {
    const bf16* col = dout + c;
    int r = r0 + threadIdx.y;
    for (; r + (kBiasUnroll - 1) * kBiasLanes < r1; r += kBiasUnroll * kBiasLanes) {
      float v[kBiasUnroll][P];
#pragma unroll
      for (int u = 0; u < kBiasUnroll; ++u)
        load_bf16<P>(v[u], col + static_cast<std::size_t>(r + u * kBiasLanes) * OC);
#pragma unroll
      for (int u = 0; u < kBiasUnroll; ++u)
#pragma unroll
        for (int i = 0; i < P; ++i) acc[i] += v[u][i];
    }
    for (; r < r1; r += kBiasLanes) {
      float v[P];
      load_bf16<P>(v, col + static_cast<std::size_t>(r) * OC);
#pragma unroll
      for (int i = 0; i < P; ++i) acc[i] += v[i];
    }
  }
#pragma unroll
  for (int i = 0; i < P; ++i) sums[threadIdx.y][threadIdx.x * P + i] = acc[i];
  __syncthreads();
  for (int t = threadIdx.y * kWarp + threadIdx.x; t < kColumns && c0 + t < OC; t += kBiasThreads) {
    float total = 0;
    for (int y = 0; y < kBiasLanes; ++y) total += sums[y][t];
    partial[static_cast<std::size_t>(blockIdx.y) * OC + c0 + t] = total;
  }
}

// Block (32, kReduceLanes) as the LayerNorm's: lane y sums chunks y, y + kReduceLanes, ... (many
// chunks: the partial kernel fills the GPU with row chunks), then lane 0 adds the lane sums.
__global__ void bias_backward_reduce_kernel(float* dbias, const float* partial, int chunks,
                                            int OC) {
  __shared__ float sums[kReduceLanes][kWarp + 1];
  const int c = blockIdx.x * kWarp + threadIdx.x;
  float acc = 0;
  if (c < OC)
    for (int i = threadIdx.y; i < chunks; i += kReduceLanes)
      acc += partial[static_cast<std::size_t>(i) * OC + c];
  sums[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || c >= OC) return;
  float total = 0;
  for (int i = 0; i < kReduceLanes; ++i) total += sums[i][threadIdx.x];
  dbias[c] += total;
}

// ---- GELU ------------------------------------------------------------------------------

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

// ---- attention helpers -----------------------------------------------------------------

template <int P, bool kSplit>
__global__ void heads_kernel(bf16* out, const bf16* inp, int B, int T, int NH, int hs,
                             int row_stride, int col_offset) {
  const int packs = hs / P;
  const std::size_t total = static_cast<std::size_t>(B) * NH * T * packs;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    // i enumerates [b, h, t, pack] (the per-head layout) ...
    const int d = static_cast<int>(i % packs) * P;
    std::size_t rest = i / packs;
    const int t = static_cast<int>(rest % T);
    rest /= T;
    const int h = static_cast<int>(rest % NH);
    const std::size_t b = rest / NH;
    // ... and its element in the token-major layout.
    const std::size_t token_index =
        (b * T + t) * static_cast<std::size_t>(row_stride) + col_offset + h * hs + d;
    const std::size_t head_index = i * P;
    float v[P];
    if constexpr (kSplit) {
      load_bf16<P>(v, inp + token_index);
      store_bf16<P>(out + head_index, v);
    } else {
      load_bf16<P>(v, inp + head_index);
      store_bf16<P>(out + token_index, v);
    }
  }
}

// One warp per row of [BH * T, T]; row t attends to columns 0..t.
__global__ void softmax_causal_forward_kernel(bf16* att, const bf16* preatt, int rows, int T,
                                              float scale) {
  const int warps = blockDim.x / kWarp;
  const int row = blockIdx.x * warps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;
  const int t = row % T;
  const std::size_t base = static_cast<std::size_t>(row) * T;
  float maxv = -INFINITY, sum = 0;
  for (int j = lane; j <= t; j += kWarp) {
    const float x = __bfloat162float(preatt[base + j]) * scale;
    if (x > maxv) {
      sum *= __expf(maxv - x);
      maxv = x;
    }
    sum += __expf(x - maxv);
  }
  const float row_max = warp_max(maxv);
  sum = warp_sum(maxv == -INFINITY ? 0.0f : sum * __expf(maxv - row_max));
  const float inv = 1.0f / sum;
  for (int j = lane; j < T; j += kWarp) {
    const float p =
        j <= t ? __expf(__bfloat162float(preatt[base + j]) * scale - row_max) * inv : 0.0f;
    att[base + j] = __float2bfloat16(p);
  }
}

__global__ void softmax_causal_backward_kernel(bf16* dpreatt, const bf16* datt, const bf16* att,
                                               int rows, int T, float scale) {
  const int warps = blockDim.x / kWarp;
  const int row = blockIdx.x * warps + threadIdx.x / kWarp;
  const int lane = threadIdx.x % kWarp;
  if (row >= rows) return;
  const int t = row % T;
  const std::size_t base = static_cast<std::size_t>(row) * T;
  float dot = 0;
  for (int j = lane; j <= t; j += kWarp)
    dot += __bfloat162float(att[base + j]) * __bfloat162float(datt[base + j]);
  dot = warp_sum(dot);
  for (int j = lane; j < T; j += kWarp) {
    float g = 0;
    if (j <= t)
      g = scale * __bfloat162float(att[base + j]) * (__bfloat162float(datt[base + j]) - dot);
    dpreatt[base + j] = __float2bfloat16(g);
  }
}

// ---- classifier ------------------------------------------------------------------------

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

// ---- optimizer -------------------------------------------------------------------------

__global__ void sum_of_squares_partial_kernel(double* partial, const float* g, std::size_t n) {
  __shared__ double shared[512];
  float s = 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    s += g[i] * g[i];
  shared[threadIdx.x] = s;
  __syncthreads();
  for (int width = blockDim.x / 2; width > 0; width >>= 1) {
    if (static_cast<int>(threadIdx.x) < width) shared[threadIdx.x] += shared[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = shared[0];
}

__global__ void sum_of_squares_final_kernel(double* out, const double* partial, int count) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double s = 0;
  for (int i = 0; i < count; ++i) s += partial[i];
  out[0] = s;
}

// P = 4: float4 accesses (n % 4 == 0 and segment ends multiples of 4), else P = 1.
template <int P>
__global__ void adamw_kernel(float* p, bf16* p_bf16, const float* g, float* m, float* v,
                             std::size_t n, const std::uint64_t* seg_ends,
                             const std::uint8_t* seg_decay, int seg_count, float lr, float beta1,
                             float beta2, float eps, float weight_decay, float bias1, float bias2,
                             const double* sumsq, float grad_clip) {
  // A non-finite gradient norm skips the step (as the CPU engine): the same value in every
  // thread, so the whole grid returns before any write.
  if (sumsq != nullptr && !isfinite(sumsq[0])) return;
  extern __shared__ std::uint64_t ends[];
  for (int i = threadIdx.x; i < seg_count; i += blockDim.x) ends[i] = seg_ends[i];
  __syncthreads();
  // The same clip factor as the CPU engine: min(1, clip / (norm + 1e-6)) in double.
  float clip = 1.0f;
  if (sumsq != nullptr && grad_clip > 0)
    clip = static_cast<float>(fmin(1.0, grad_clip / (sqrt(sumsq[0]) + 1e-6)));
  const std::size_t packs = n / P;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < packs;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::uint64_t e = i * P;
    int lo = 0, hi = seg_count - 1;  // first segment whose end is > e
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (ends[mid] > e)
        hi = mid;
      else
        lo = mid + 1;
    }
    const float wd = seg_decay[lo] ? weight_decay : 0.0f;
    float pv[P], gv[P], mv[P], vv[P];
    if constexpr (P == 4) {
      const float4 a = reinterpret_cast<const float4*>(p)[i];
      const float4 b = reinterpret_cast<const float4*>(g)[i];
      const float4 c = reinterpret_cast<const float4*>(m)[i];
      const float4 d = reinterpret_cast<const float4*>(v)[i];
      pv[0] = a.x, pv[1] = a.y, pv[2] = a.z, pv[3] = a.w;
      gv[0] = b.x, gv[1] = b.y, gv[2] = b.z, gv[3] = b.w;
      mv[0] = c.x, mv[1] = c.y, mv[2] = c.z, mv[3] = c.w;
      vv[0] = d.x, vv[1] = d.y, vv[2] = d.z, vv[3] = d.w;
    } else {
      pv[0] = p[i], gv[0] = g[i], mv[0] = m[i], vv[0] = v[i];
    }
#pragma unroll
    for (int k = 0; k < P; ++k) {
      const float grad = gv[k] * clip;
      mv[k] = beta1 * mv[k] + (1.0f - beta1) * grad;
      vv[k] = beta2 * vv[k] + (1.0f - beta2) * grad * grad;
      const float m_hat = mv[k] / bias1;
      const float v_hat = vv[k] / bias2;
      pv[k] -= lr * (m_hat / (sqrtf(v_hat) + eps) + wd * pv[k]);
    }
    if constexpr (P == 4) {
      reinterpret_cast<float4*>(p)[i] = make_float4(pv[0], pv[1], pv[2], pv[3]);
      reinterpret_cast<float4*>(m)[i] = make_float4(mv[0], mv[1], mv[2], mv[3]);
      reinterpret_cast<float4*>(v)[i] = make_float4(vv[0], vv[1], vv[2], vv[3]);
      __nv_bfloat162 lo2 = __floats2bfloat162_rn(pv[0], pv[1]);
      __nv_bfloat162 hi2 = __floats2bfloat162_rn(pv[2], pv[3]);
      reinterpret_cast<__nv_bfloat162*>(p_bf16)[2 * i] = lo2;
      reinterpret_cast<__nv_bfloat162*>(p_bf16)[2 * i + 1] = hi2;
    } else {
      p[i] = pv[0], m[i] = mv[0], v[i] = vv[0];
      p_bf16[i] = __float2bfloat16(pv[0]);
    }
  }
}

}  // namespace

// ---- launchers ---------------------------------------------------------------------------

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

void mean_of(float* out, const float* values, int n, cudaStream_t stream) {
  mean_kernel<<<1, 1024, 0, stream>>>(out, values, n);
  BTM_CUDA_CHECK_LAUNCH();
}

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

std::size_t bias_backward_scratch_floats(int OC) {
  return static_cast<std::size_t>(kMaxBiasChunks) * OC;
}

namespace {
// Row chunks enough for one full wave of partial-kernel blocks (each with kBiasUnroll loads per
// thread in flight: enough to keep HBM busy), at least 32 rows each.
template <int P>
void launch_bias_backward(float* dbias, float* scratch, const bf16* dout, int N, int OC,
                          cudaStream_t stream) {
  const auto kernel = bias_backward_partial_kernel<P>;
  int per_sm = 0;
  BTM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kBiasThreads, 0));
  const int column_blocks = (OC + kWarp * P - 1) / (kWarp * P);
  const int wave = std::max(1, per_sm) * sm_count();
  const int target_chunks = std::clamp(wave / column_blocks, 1, kMaxBiasChunks);
  const int rows_per_chunk = std::max(32, (N + target_chunks - 1) / target_chunks);
  const int chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
  kernel<<<dim3(column_blocks, chunks), dim3(kWarp, kBiasLanes), 0, stream>>>(scratch, dout, N, OC,
                                                                              rows_per_chunk);
  BTM_CUDA_CHECK_LAUNCH();
  bias_backward_reduce_kernel<<<(OC + kWarp - 1) / kWarp, dim3(kWarp, kReduceLanes), 0, stream>>>(
      dbias, scratch, chunks, OC);
  BTM_CUDA_CHECK_LAUNCH();
}
}  // namespace

void bias_backward(float* dbias, float* scratch, const bf16* dout, int N, int OC,
                   cudaStream_t stream) {
  if (N <= 0 || OC <= 0) return;
  if (OC % 8 == 0 && aligned16(dout))
    launch_bias_backward<8>(dbias, scratch, dout, N, OC, stream);
  else
    launch_bias_backward<1>(dbias, scratch, dout, N, OC, stream);
}

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

namespace {
template <bool kSplit>
void launch_heads(bf16* out, const bf16* inp, int B, int T, int NH, int hs, int row_stride,
                  int col_offset, cudaStream_t stream) {
  const std::size_t elements = static_cast<std::size_t>(B) * NH * T * hs;
  const bool vector =
      hs % 8 == 0 && row_stride % 8 == 0 && col_offset % 8 == 0 && aligned16(out) && aligned16(inp);
  if (vector)
    heads_kernel<8, kSplit><<<grid_for(elements / 8, 256), 256, 0, stream>>>(
        out, inp, B, T, NH, hs, row_stride, col_offset);
  else
    heads_kernel<1, kSplit><<<grid_for(elements, 256), 256, 0, stream>>>(out, inp, B, T, NH, hs,
                                                                         row_stride, col_offset);
  BTM_CUDA_CHECK_LAUNCH();
}
}  // namespace

void heads_split(bf16* out, const bf16* inp, int B, int T, int NH, int hs, int row_stride,
                 int col_offset, cudaStream_t stream) {
  launch_heads<true>(out, inp, B, T, NH, hs, row_stride, col_offset, stream);
}

void heads_merge(bf16* out, const bf16* inp, int B, int T, int NH, int hs, int row_stride,
                 int col_offset, cudaStream_t stream) {
  launch_heads<false>(out, inp, B, T, NH, hs, row_stride, col_offset, stream);
}

void softmax_causal_forward(bf16* att, const bf16* preatt, int BH, int T, float scale,
                            cudaStream_t stream) {
  const int rows = BH * T;
  softmax_causal_forward_kernel<<<(rows + 7) / 8, 256, 0, stream>>>(att, preatt, rows, T, scale);
  BTM_CUDA_CHECK_LAUNCH();
}

void softmax_causal_backward(bf16* dpreatt, const bf16* datt, const bf16* att, int BH, int T,
                             float scale, cudaStream_t stream) {
  const int rows = BH * T;
  softmax_causal_backward_kernel<<<(rows + 7) / 8, 256, 0, stream>>>(dpreatt, datt, att, rows, T,
                                                                     scale);
  BTM_CUDA_CHECK_LAUNCH();
}

void attention_forward(Blas& blas, bf16* out, bf16* qkvr, bf16* att, bf16* vaccum, const bf16* qkv,
                       int B, int T, int C, int NH, cudaStream_t stream) {
  const int hs = C / NH;
  const std::size_t NC = static_cast<std::size_t>(B) * T * C;
  bf16* q = qkvr;
  bf16* k = qkvr + NC;
  bf16* v = qkvr + 2 * NC;
  heads_split(q, qkv, B, T, NH, hs, 3 * C, 0, stream);
  heads_split(k, qkv, B, T, NH, hs, 3 * C, C, stream);
  heads_split(v, qkv, B, T, NH, hs, 3 * C, 2 * C, stream);
  const long long head = static_cast<long long>(T) * hs, square = static_cast<long long>(T) * T;
  // Column-major: preatt^T = K @ Q^T per head, written into att and normalised in place.
  Blas::Gemm s;
  s.trans_a = true, s.m = T, s.n = T, s.k = hs;
  s.a = k, s.lda = hs, s.stride_a = head;
  s.b = q, s.ldb = hs, s.stride_b = head;
  s.d = att, s.ldd = T, s.stride_d = square, s.batch = B * NH;
  blas.gemm(s, stream);
  softmax_causal_forward(att, att, B * NH, T, 1.0f / std::sqrt(static_cast<float>(hs)), stream);
  // vaccum^T = V^T @ att^T per head.
  Blas::Gemm y;
  y.m = hs, y.n = T, y.k = T;
  y.a = v, y.lda = hs, y.stride_a = head;
  y.b = att, y.ldb = T, y.stride_b = square;
  y.d = vaccum, y.ldd = hs, y.stride_d = head, y.batch = B * NH;
  blas.gemm(y, stream);
  heads_merge(out, vaccum, B, T, NH, hs, C, 0, stream);
}

void attention_backward(Blas& blas, bf16* dqkv, bf16* dqkvr, bf16* datt, bf16* dvaccum,
                        const bf16* dout, const bf16* qkvr, const bf16* att, int B, int T, int C,
                        int NH, cudaStream_t stream) {
  const int hs = C / NH;
  const std::size_t NC = static_cast<std::size_t>(B) * T * C;
  const bf16* q = qkvr;
  const bf16* k = qkvr + NC;
  const bf16* v = qkvr + 2 * NC;
  bf16* dq = dqkvr;
  bf16* dk = dqkvr + NC;
  bf16* dv = dqkvr + 2 * NC;
  const long long head = static_cast<long long>(T) * hs, square = static_cast<long long>(T) * T;
  const int batch = B * NH;
  heads_split(dvaccum, dout, B, T, NH, hs, C, 0, stream);
  auto gemm = [&](bool ta, bool tb, int m, int n, int kk, const bf16* a, int lda, long long sa,
                  const bf16* b, int ldb, long long sb, bf16* d, int ldd, long long sd) {
    Blas::Gemm g;
    g.trans_a = ta, g.trans_b = tb, g.m = m, g.n = n, g.k = kk;
    g.a = a, g.lda = lda, g.stride_a = sa;
    g.b = b, g.ldb = ldb, g.stride_b = sb;
    g.d = d, g.ldd = ldd, g.stride_d = sd, g.batch = batch;
    blas.gemm(g, stream);
  };
  // datt = dO @ V^T (column-major datt^T = V @ dO^T)
  gemm(true, false, T, T, hs, v, hs, head, dvaccum, hs, head, datt, T, square);
  // dV = att^T @ dO (column-major dV^T = dO^T @ att)
  gemm(false, true, hs, T, T, dvaccum, hs, head, att, T, square, dv, hs, head);
  softmax_causal_backward(datt, datt, att, B * NH, T, 1.0f / std::sqrt(static_cast<float>(hs)),
                          stream);
  // dQ = dpreatt @ K (column-major dQ^T = K^T @ dpreatt^T)
  gemm(false, false, hs, T, T, k, hs, head, datt, T, square, dq, hs, head);
  // dK = dpreatt^T @ Q (column-major dK^T = Q^T @ dpreatt)
  gemm(false, true, hs, T, T, q, hs, head, datt, T, square, dk, hs, head);
  heads_merge(dqkv, dq, B, T, NH, hs, 3 * C, 0, stream);
  heads_merge(dqkv, dk, B, T, NH, hs, 3 * C, C, stream);
  heads_merge(dqkv, dv, B, T, NH, hs, 3 * C, 2 * C, stream);
}

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

std::size_t sum_of_squares_scratch_doubles() {
  return kSumSquaresBlocks;
}

void sum_of_squares(double* out, double* scratch, const float* g, std::size_t n,
                    cudaStream_t stream) {
  sum_of_squares_partial_kernel<<<kSumSquaresBlocks, 512, 0, stream>>>(scratch, g, n);
  BTM_CUDA_CHECK_LAUNCH();
  sum_of_squares_final_kernel<<<1, 32, 0, stream>>>(out, scratch, kSumSquaresBlocks);
  BTM_CUDA_CHECK_LAUNCH();
}

void adamw_update(float* p, bf16* p_bf16, const float* g, float* m, float* v, std::size_t n,
                  const DecaySegments& segments, float lr, float beta1, float beta2, float eps,
                  float weight_decay, float bias1, float bias2, const double* sumsq,
                  float grad_clip, cudaStream_t stream) {
  if (n == 0) return;
  const std::size_t shared = static_cast<std::size_t>(segments.count) * sizeof(std::uint64_t);
  // float4 packs must not straddle a segment end, and need 16-byte aligned vectors.
  const bool vector = n % 4 == 0 && segments.ends_multiple_of_4 && aligned16(p) && aligned16(g) &&
                      aligned16(m) && aligned16(v) &&
                      reinterpret_cast<std::uintptr_t>(p_bf16) % 8 == 0;
  if (vector)
    adamw_kernel<4><<<grid_for(n / 4, 256), 256, shared, stream>>>(
        p, p_bf16, g, m, v, n, segments.ends, segments.decay, segments.count, lr, beta1, beta2, eps,
        weight_decay, bias1, bias2, sumsq, grad_clip);
  else
    adamw_kernel<1><<<grid_for(n, 256), 256, shared, stream>>>(
        p, p_bf16, g, m, v, n, segments.ends, segments.decay, segments.count, lr, beta1, beta2, eps,
        weight_decay, bias1, bias2, sumsq, grad_clip);
  BTM_CUDA_CHECK_LAUNCH();
}

}  // namespace btm::cuda

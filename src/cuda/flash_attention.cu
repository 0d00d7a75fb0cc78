// flash_attention.cu: fused causal self-attention for head_dim 64 (FlashAttention-2 style),
// forward and backward, on bf16 tensor cores (mma.sync m16n8k16, fp32 accumulation), with no
// T x T matrix in memory. q, k, v are read straight from the qkv GEMM's output [B, T, 3C] and
// dq, dk, dv written straight into dqkv [B, T, 3C]. Tiles of 64 queries x 64 keys; a block is
// 4 warps, each owning 16 rows. The forward keeps the log2-sum-exp of every row for the
// backward. The backward runs two kernels (dK/dV per key tile, dQ per query tile) instead of
// accumulating dQ with atomics, so it is deterministic.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, t = lane % 4): A (16x16) a0 = (g, 2t..2t+1),
// a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..); B (16x8) b0 = (k 2t..2t+1, n g),
// b1 = (k 2t+8.., n g); C (16x8) c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1). A C tile of
// scores is therefore the A operand of the next product after packing pairs to bf16.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "btm/cuda_check.hpp"
#include "btm/cuda_kernels.hpp"

namespace btm::cuda {
namespace {

constexpr int kD = 64;           // head dimension
constexpr int kTile = 64;        // queries and keys per tile
constexpr int kStride = kD + 8;  // padded shared-memory row: conflict-free ldmatrix
constexpr int kThreads = 128;    // 4 warps x 16 rows
constexpr int kTileElements = kTile * kStride;

__device__ __forceinline__ std::uint32_t smem_address(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}

__device__ __forceinline__ void mma(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                    std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ std::uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const std::uint32_t*>(&v);
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Rows [row0, row0 + kTile) of a [T, kD] slice whose rows are row_stride apart, into shared
// memory; rows at or past T read as zeros.
__device__ __forceinline__ void load_tile(bf16* tile, const bf16* src, int row0, int T,
                                          std::size_t row_stride) {
  constexpr int kChunks = kD / 8;  // 16-byte chunks per row
  for (int i = threadIdx.x; i < kTile * kChunks; i += kThreads) {
    const int r = i / kChunks, c = (i % kChunks) * 8;
    int4 v = make_int4(0, 0, 0, 0);
    if (row0 + r < T)
      v = *reinterpret_cast<const int4*>(src + static_cast<std::size_t>(row0 + r) * row_stride + c);
    *reinterpret_cast<int4*>(tile + r * kStride + c) = v;
  }
}

// The A fragments of this warp's 16 rows of a tile, all kD columns.
__device__ __forceinline__ void load_a_fragments(std::uint32_t (&f)[kD / 16][4], const bf16* tile,
                                                 int warp, int lane) {
#pragma unroll
  for (int kc = 0; kc < kD / 16; ++kc)
    ldmatrix_x4(f[kc], tile + (warp * 16 + (lane & 7) + 8 * ((lane >> 3) & 1)) * kStride + kc * 16 +
                           8 * (lane >> 4));
}

// acc[16 x kTile] += A[16 x kD] @ tile^T, tile rows being the kTile output columns ("x @ y^T").
__device__ __forceinline__ void product_with_rows(float (&acc)[kTile / 8][4],
                                                  const std::uint32_t (&a)[kD / 16][4],
                                                  const bf16* tile, int lane) {
#pragma unroll
  for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
    for (int kc = 0; kc < kD / 16; kc += 2) {
      std::uint32_t b[4];
      ldmatrix_x4(b, tile + (j * 8 + (lane & 7)) * kStride + kc * 16 + 8 * (lane >> 3));
      mma(acc[j], a[kc], b[0], b[1]);
      mma(acc[j], a[kc + 1], b[2], b[3]);
    }
}

// acc[16 x kD] += P[16 x kTile] @ tile, P given as C fragments (packed to bf16 here).
__device__ __forceinline__ void product_with_tile(float (&acc)[kD / 8][4],
                                                  const float (&p)[kTile / 8][4], const bf16* tile,
                                                  int lane) {
#pragma unroll
  for (int kc = 0; kc < kTile / 16; ++kc) {
    const std::uint32_t a[4] = {pack_bf16(p[2 * kc][0], p[2 * kc][1]),
                                pack_bf16(p[2 * kc][2], p[2 * kc][3]),
                                pack_bf16(p[2 * kc + 1][0], p[2 * kc + 1][1]),
                                pack_bf16(p[2 * kc + 1][2], p[2 * kc + 1][3])};
#pragma unroll
    for (int dn = 0; dn < kD / 16; ++dn) {
      std::uint32_t b[4];
      ldmatrix_x4_trans(b, tile + (kc * 16 + (lane & 7) + 8 * ((lane >> 3) & 1)) * kStride +
                               dn * 16 + 8 * (lane >> 4));
      mma(acc[2 * dn], a, b[0], b[1]);
      mma(acc[2 * dn + 1], a, b[2], b[3]);
    }
  }
}

template <int N>
__device__ __forceinline__ void zero(float (&acc)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
}

// Writes rows row_a and row_a + 8 of a [16 x kD] accumulator, times `scale`, into
// dst[row * row_stride + col] (rows at or past T are skipped).
__device__ __forceinline__ void store_rows(bf16* dst, const float (&acc)[kD / 8][4], int row_a,
                                           int T, std::size_t row_stride, float scale0,
                                           float scale1, int t) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row_a + 8 * r;
    if (row >= T) continue;
    const float s = r == 0 ? scale0 : scale1;
    bf16* out = dst + static_cast<std::size_t>(row) * row_stride;
#pragma unroll
    for (int n = 0; n < kD / 8; ++n)
      *reinterpret_cast<__nv_bfloat162*>(out + n * 8 + 2 * t) =
          __floats2bfloat162_rn(acc[n][2 * r] * s, acc[n][2 * r + 1] * s);
  }
}

// grid (query tiles, B * NH), the longest (last) query tiles first.
__global__ void __launch_bounds__(kThreads)
    flash_forward_kernel(bf16* out, float* lse, const bf16* qkv, int T, int NH, float scale_log2) {
  __shared__ alignas(16) bf16 sQ[kTileElements];
  __shared__ alignas(16) bf16 sK[kTileElements];
  __shared__ alignas(16) bf16 sV[kTileElements];
  const int C = NH * kD;
  const std::size_t row_stride = 3 * static_cast<std::size_t>(C);
  const int q_tile = gridDim.x - 1 - blockIdx.x;
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int q0 = q_tile * kTile;
  const bf16* q_base = qkv + static_cast<std::size_t>(b) * T * row_stride + h * kD;
  const bf16* k_base = q_base + C;
  const bf16* v_base = q_base + 2 * C;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int row_a = q0 + warp * 16 + g;  // this thread's rows: row_a and row_a + 8

  load_tile(sQ, q_base, q0, T, row_stride);
  __syncthreads();
  std::uint32_t qf[kD / 16][4];
  load_a_fragments(qf, sQ, warp, lane);

  float o[kD / 8][4];
  zero(o);
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};
  for (int kt = 0; kt <= q_tile; ++kt) {
    const int k0 = kt * kTile;
    __syncthreads();  // every warp is done with the previous K, V tiles
    load_tile(sK, k_base, k0, T, row_stride);
    load_tile(sV, v_base, k0, T, row_stride);
    __syncthreads();
    float s[kTile / 8][4];
    zero(s);
    product_with_rows(s, qf, sK, lane);
    const bool diagonal = kt == q_tile;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
        for (int e = 2 * r; e < 2 * r + 2; ++e) {
          float v = s[j][e] * scale_log2;
          if (diagonal && k0 + j * 8 + 2 * t + (e & 1) > row_a + 8 * r) v = -INFINITY;
          s[j][e] = v;
          mx = fmaxf(mx, v);
        }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      // Key 0 is visible to every row, so the running maximum is finite from the first tile.
      const float m_new = fmaxf(m_run[r], mx);
      const float alpha = fast_exp2(m_run[r] - m_new);
      m_run[r] = m_new;
      l_run[r] *= alpha;
#pragma unroll
      for (int n = 0; n < kD / 8; ++n) {
        o[n][2 * r] *= alpha;
        o[n][2 * r + 1] *= alpha;
      }
#pragma unroll
      for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
        for (int e = 2 * r; e < 2 * r + 2; ++e) {
          s[j][e] = fast_exp2(s[j][e] - m_new);
          l_run[r] += s[j][e];
        }
    }
    product_with_tile(o, s, sV, lane);
  }
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[r] = 1.0f / l;
    const int row = row_a + 8 * r;
    if (t == 0 && row < T) lse[static_cast<std::size_t>(bh) * T + row] = m_run[r] + __log2f(l);
  }
  store_rows(out + static_cast<std::size_t>(b) * T * C + h * kD, o, row_a, T, C, inv[0], inv[1], t);
}

// dvec[b, h, t] = sum_d dout[b, t, h, d] * out[b, t, h, d]; one thread per (b, t, h).
__global__ void flash_backward_dot_kernel(float* dvec, const bf16* dout, const bf16* out, int B,
                                          int T, int NH) {
  const std::size_t total = static_cast<std::size_t>(B) * T * NH;
  const int C = NH * kD;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const int h = static_cast<int>(i % NH);
    const std::size_t bt = i / NH;
    const std::size_t b = bt / T, t = bt % T;
    const bf16* x = dout + bt * C + h * kD;
    const bf16* y = out + bt * C + h * kD;
    float acc = 0;
#pragma unroll
    for (int c = 0; c < kD; c += 8) {
      const int4 xv = *reinterpret_cast<const int4*>(x + c);
      const int4 yv = *reinterpret_cast<const int4*>(y + c);
      const bf16* xs = reinterpret_cast<const bf16*>(&xv);
      const bf16* ys = reinterpret_cast<const bf16*>(&yv);
#pragma unroll
      for (int k = 0; k < 8; ++k) acc += __bfloat162float(xs[k]) * __bfloat162float(ys[k]);
    }
    dvec[(b * NH + h) * T + t] = acc;
  }
}

// dK, dV of one key tile: loop over the query tiles that see it. grid (key tiles, B * NH).
__global__ void __launch_bounds__(kThreads)
    flash_backward_dkdv_kernel(bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse,
                               const float* dvec, int T, int NH, float scale_log2, float scale) {
  __shared__ alignas(16) bf16 sQ[kTileElements];
  __shared__ alignas(16) bf16 sdO[kTileElements];
  __shared__ float sLse[kTile], sDvec[kTile];
  const int C = NH * kD;
  const std::size_t row_stride = 3 * static_cast<std::size_t>(C);
  const int k_tile = blockIdx.x;
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int k0 = k_tile * kTile;
  const bf16* q_base = qkv + static_cast<std::size_t>(b) * T * row_stride + h * kD;
  const bf16* k_base = q_base + C;
  const bf16* v_base = q_base + 2 * C;
  const bf16* do_base = dout + static_cast<std::size_t>(b) * T * C + h * kD;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int key_a = k0 + warp * 16 + g;  // this thread's keys: key_a and key_a + 8

  // K and V of this tile as A fragments, staged through the Q / dO buffers.
  load_tile(sQ, k_base, k0, T, row_stride);
  load_tile(sdO, v_base, k0, T, row_stride);
  __syncthreads();
  std::uint32_t kf[kD / 16][4], vf[kD / 16][4];
  load_a_fragments(kf, sQ, warp, lane);
  load_a_fragments(vf, sdO, warp, lane);

  float dk[kD / 8][4], dv[kD / 8][4];
  zero(dk);
  zero(dv);
  const int q_tiles = (T + kTile - 1) / kTile;
  const float* lse_bh = lse + static_cast<std::size_t>(bh) * T;
  const float* dvec_bh = dvec + static_cast<std::size_t>(bh) * T;
  for (int qt = k_tile; qt < q_tiles; ++qt) {
    const int q0 = qt * kTile;
    __syncthreads();
    load_tile(sQ, q_base, q0, T, row_stride);
    load_tile(sdO, do_base, q0, T, C);
    if (threadIdx.x < kTile) {
      const int q = q0 + threadIdx.x;
      sLse[threadIdx.x] = q < T ? lse_bh[q] : INFINITY;  // rows past T get probability 0
      sDvec[threadIdx.x] = q < T ? dvec_bh[q] : 0.0f;
    }
    __syncthreads();
    // P^T = exp2(scale_log2 * K Q^T - lse) for this warp's 16 keys x 64 queries.
    float p[kTile / 8][4];
    zero(p);
    product_with_rows(p, kf, sQ, lane);
    const bool diagonal = qt == k_tile;
#pragma unroll
    for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = j * 8 + 2 * t + (e & 1);
        const int key = key_a + 8 * (e >> 1);
        const float v = fast_exp2(p[j][e] * scale_log2 - sLse[col]);
        p[j][e] = diagonal && key > q0 + col ? 0.0f : v;
      }
    product_with_tile(dv, p, sdO, lane);  // dV += P^T dO
    float ds[kTile / 8][4];
    zero(ds);
    product_with_rows(ds, vf, sdO, lane);  // dP^T = V dO^T
#pragma unroll
    for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) ds[j][e] = p[j][e] * (ds[j][e] - sDvec[j * 8 + 2 * t + (e & 1)]);
    product_with_tile(dk, ds, sQ, lane);  // dK += dS^T Q
  }
  bf16* dst = dqkv + static_cast<std::size_t>(b) * T * row_stride + h * kD;
  store_rows(dst + C, dk, key_a, T, row_stride, scale, scale, t);
  store_rows(dst + 2 * C, dv, key_a, T, row_stride, 1.0f, 1.0f, t);
}

// dQ of one query tile: loop over the key tiles it sees. grid (query tiles, B * NH).
__global__ void __launch_bounds__(kThreads)
    flash_backward_dq_kernel(bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse,
                             const float* dvec, int T, int NH, float scale_log2, float scale) {
  __shared__ alignas(16) bf16 sK[kTileElements];
  __shared__ alignas(16) bf16 sV[kTileElements];
  const int C = NH * kD;
  const std::size_t row_stride = 3 * static_cast<std::size_t>(C);
  const int q_tile = gridDim.x - 1 - blockIdx.x;
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
  const int q0 = q_tile * kTile;
  const bf16* q_base = qkv + static_cast<std::size_t>(b) * T * row_stride + h * kD;
  const bf16* k_base = q_base + C;
  const bf16* v_base = q_base + 2 * C;
  const bf16* do_base = dout + static_cast<std::size_t>(b) * T * C + h * kD;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int row_a = q0 + warp * 16 + g;

  load_tile(sK, q_base, q0, T, row_stride);
  load_tile(sV, do_base, q0, T, C);
  __syncthreads();
  std::uint32_t qf[kD / 16][4], dof[kD / 16][4];
  load_a_fragments(qf, sK, warp, lane);
  load_a_fragments(dof, sV, warp, lane);
  float row_lse[2], row_dvec[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row_a + 8 * r;
    row_lse[r] = row < T ? lse[static_cast<std::size_t>(bh) * T + row] : INFINITY;
    row_dvec[r] = row < T ? dvec[static_cast<std::size_t>(bh) * T + row] : 0.0f;
  }

  float dq[kD / 8][4];
  zero(dq);
  for (int kt = 0; kt <= q_tile; ++kt) {
    const int k0 = kt * kTile;
    __syncthreads();
    load_tile(sK, k_base, k0, T, row_stride);
    load_tile(sV, v_base, k0, T, row_stride);
    __syncthreads();
    float p[kTile / 8][4];
    zero(p);
    product_with_rows(p, qf, sK, lane);  // S = Q K^T
    const bool diagonal = kt == q_tile;
#pragma unroll
    for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        const float v = fast_exp2(p[j][e] * scale_log2 - row_lse[r]);
        p[j][e] = diagonal && k0 + j * 8 + 2 * t + (e & 1) > row_a + 8 * r ? 0.0f : v;
      }
    float ds[kTile / 8][4];
    zero(ds);
    product_with_rows(ds, dof, sV, lane);  // dP = dO V^T
#pragma unroll
    for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) ds[j][e] = p[j][e] * (ds[j][e] - row_dvec[e >> 1]);
    product_with_tile(dq, ds, sK, lane);  // dQ += dS K
  }
  store_rows(dqkv + static_cast<std::size_t>(b) * T * row_stride + h * kD, dq, row_a, T, row_stride,
             scale, scale, t);
}

}  // namespace

bool flash_attention_supported(int head_dim) {
  return head_dim == kD;
}

void flash_attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                             cudaStream_t stream) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(kD));
  const dim3 grid((T + kTile - 1) / kTile, B * NH);
  flash_forward_kernel<<<grid, kThreads, 0, stream>>>(out, lse, qkv, T, NH,
                                                      scale * 1.4426950408889634f);
  BTM_CUDA_CHECK_LAUNCH();
  (void)C;
}

void flash_attention_backward(bf16* dqkv, float* dvec, const bf16* dout, const bf16* qkv,
                              const bf16* out, const float* lse, int B, int T, int C, int NH,
                              cudaStream_t stream) {
  (void)C;
  const float scale = 1.0f / std::sqrt(static_cast<float>(kD));
  const float scale_log2 = scale * 1.4426950408889634f;
  const std::size_t rows = static_cast<std::size_t>(B) * T * NH;
  flash_backward_dot_kernel<<<
      static_cast<unsigned>(std::min<std::size_t>((rows + 255) / 256, 65536)), 256, 0, stream>>>(
      dvec, dout, out, B, T, NH);
  BTM_CUDA_CHECK_LAUNCH();
  const dim3 grid((T + kTile - 1) / kTile, B * NH);
  flash_backward_dkdv_kernel<<<grid, kThreads, 0, stream>>>(dqkv, qkv, dout, lse, dvec, T, NH,
                                                            scale_log2, scale);
  BTM_CUDA_CHECK_LAUNCH();
  flash_backward_dq_kernel<<<grid, kThreads, 0, stream>>>(dqkv, qkv, dout, lse, dvec, T, NH,
                                                          scale_log2, scale);
  BTM_CUDA_CHECK_LAUNCH();
}

}  // namespace btm::cuda

// flash_attention.cu: fused causal self-attention for head_dim 64 (FlashAttention-2 style),
// forward and backward, on bf16 tensor cores (mma.sync m16n8k16, fp32 accumulation), with no
// T x T matrix in memory. q, k, v are read straight from the qkv GEMM's output [B, T, 3C] and
// dq, dk, dv written straight into dqkv [B, T, 3C]. A block owns 128 rows (queries, or keys for
// dK/dV): the forward and dQ as 4 warps of 2 x 16 rows (each K/V fragment read from shared
// memory then feeds two row tiles), dK/dV as 8 warps of 16 rows. It walks the other side in tiles
// of 64, which cp.async double-buffers in shared memory (the next tile's copies are in flight
// while the current one is multiplied). Causality: a block sees only the tiles at or before its
// diagonal, the mask is evaluated only on tiles that cross a warp's diagonal, and a warp skips the
// tiles entirely past (or, for dK/dV, before) its rows. The longest blocks are launched first. The
// forward keeps the log2-sum-exp of every row for the backward. The backward runs two kernels
// (dK/dV per key block, dQ per query block) instead of accumulating dQ with atomics, so it is
// deterministic (fixed summation order, no atomics).
// Assumptions: head dim kD = 64; C = NH * 64; rows of qkv, dqkv, dout, out 16-byte aligned (C
// a multiple of 8, base pointers from cudaMalloc); T * 3C < 2^31 (int offsets within one batch
// row); lse and dvec [B, NH, T] fp32. The dK/dV kernel takes 55 KB of dynamic shared memory,
// the dQ kernel 74 KB (the attribute is raised before launch). The previous kernels (64-row blocks
// of 4 warps, synchronous loads) are in git history.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, t = lane % 4): A (16x16) a0 = (g, 2t..2t+1),
// a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..); B (16x8) b0 = (k 2t..2t+1, n g),
// b1 = (k 2t+8.., n g); C (16x8) c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1). A C tile of
// scores is therefore the A operand of the next product after packing pairs to bf16.
// On Hopper the public functions at the end dispatch to flash_attention_sm90.cu (wgmma), which
// keeps this file's structure; the row dot kernel here serves both.
#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "btm/cuda/check.hpp"
#include "btm/cuda/kernels/flash_attention.hpp"
#include "btm/util/error.hpp"
#include "flash_common.cuh"
#include "flash_sm90.hpp"

namespace btm::cuda {
namespace {
using namespace flash;

constexpr int kStride = kD + 8;  // padded shared-memory row: conflict-free ldmatrix
constexpr int kTileElements = kTile * kStride;

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

// The A fragments of kM consecutive 16-row tiles starting at `rows` (this warp's rows of a shared
// tile), all kD columns.
template <int kM>
__device__ __forceinline__ void load_a_fragments(std::uint32_t (&f)[kM][kD / 16][4],
                                                 const bf16* rows, int lane) {
#pragma unroll
  for (int mi = 0; mi < kM; ++mi)
#pragma unroll
    for (int kc = 0; kc < kD / 16; ++kc)
      ldmatrix_x4(f[mi][kc], rows + (mi * 16 + (lane & 7) + 8 * ((lane >> 3) & 1)) * kStride +
                                 kc * 16 + 8 * (lane >> 4));
}

// acc[16 kM x kTile] += A[16 kM x kD] @ tile^T, tile rows being the kTile output columns
// ("x @ y^T"). Each B fragment loaded from shared memory serves all kM row tiles.
template <int kM>
__device__ __forceinline__ void product_with_rows(float (&acc)[kM][kTile / 8][4],
                                                  const std::uint32_t (&a)[kM][kD / 16][4],
                                                  const bf16* tile, int lane) {
#pragma unroll
  for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
    for (int kc = 0; kc < kD / 16; kc += 2) {
      std::uint32_t b[4];
      ldmatrix_x4(b, tile + (j * 8 + (lane & 7)) * kStride + kc * 16 + 8 * (lane >> 3));
#pragma unroll
      for (int mi = 0; mi < kM; ++mi) {
        mma(acc[mi][j], a[mi][kc], b[0], b[1]);
        mma(acc[mi][j], a[mi][kc + 1], b[2], b[3]);
      }
    }
}

// acc[16 kM x kD] += P[16 kM x kTile] @ tile, P given as C fragments (packed to bf16 here).
template <int kM>
__device__ __forceinline__ void product_with_tile(float (&acc)[kM][kD / 8][4],
                                                  const float (&p)[kM][kTile / 8][4],
                                                  const bf16* tile, int lane) {
#pragma unroll
  for (int kc = 0; kc < kTile / 16; ++kc) {
    std::uint32_t a[kM][4];
#pragma unroll
    for (int mi = 0; mi < kM; ++mi) {
      a[mi][0] = pack_bf16(p[mi][2 * kc][0], p[mi][2 * kc][1]);
      a[mi][1] = pack_bf16(p[mi][2 * kc][2], p[mi][2 * kc][3]);
      a[mi][2] = pack_bf16(p[mi][2 * kc + 1][0], p[mi][2 * kc + 1][1]);
      a[mi][3] = pack_bf16(p[mi][2 * kc + 1][2], p[mi][2 * kc + 1][3]);
    }
#pragma unroll
    for (int dn = 0; dn < kD / 16; ++dn) {
      std::uint32_t b[4];
      ldmatrix_x4_trans(b, tile + (kc * 16 + (lane & 7) + 8 * ((lane >> 3) & 1)) * kStride +
                               dn * 16 + 8 * (lane >> 4));
#pragma unroll
      for (int mi = 0; mi < kM; ++mi) {
        mma(acc[mi][2 * dn], a[mi], b[0], b[1]);
        mma(acc[mi][2 * dn + 1], a[mi], b[2], b[3]);
      }
    }
  }
}

// The one-row-tile forms the backward kernels use (a warp of 16 rows).
__device__ __forceinline__ void load_a_fragments(std::uint32_t (&f)[kD / 16][4], const bf16* tile,
                                                 int warp, int lane) {
  load_a_fragments<1>(reinterpret_cast<std::uint32_t(&)[1][kD / 16][4]>(f),
                      tile + warp * 16 * kStride, lane);
}
__device__ __forceinline__ void product_with_rows(float (&acc)[kTile / 8][4],
                                                  const std::uint32_t (&a)[kD / 16][4],
                                                  const bf16* tile, int lane) {
  product_with_rows<1>(reinterpret_cast<float(&)[1][kTile / 8][4]>(acc),
                       reinterpret_cast<const std::uint32_t(&)[1][kD / 16][4]>(a), tile, lane);
}
__device__ __forceinline__ void product_with_tile(float (&acc)[kD / 8][4],
                                                  const float (&p)[kTile / 8][4], const bf16* tile,
                                                  int lane) {
  product_with_tile<1>(reinterpret_cast<float(&)[1][kD / 8][4]>(acc),
                       reinterpret_cast<const float(&)[1][kTile / 8][4]>(p), tile, lane);
}

template <int N>
__device__ __forceinline__ void zero(float (&acc)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
}

// dvec[b, h, t] = sum_d dout[b, t, h, d] * out[b, t, h, d]. Eight lanes per (b, h, t) row, one
// 16-byte load each from dout and out (every 128-byte head row read whole by one load
// instruction), summed across the eight by shuffles; rows in dvec's order, t fastest.
constexpr int kDotLanes = kD / 8;
__global__ void flash_backward_dot_kernel(float* dvec, const bf16* dout, const bf16* out, int B,
                                          int T, int NH) {
  constexpr int kRowsPerWarp = kWarp / kDotLanes;
  const std::size_t rows = static_cast<std::size_t>(B) * NH * T;
  const int C = NH * kD;
  const int lane = threadIdx.x % kWarp, part = lane % kDotLanes;
  const std::size_t thread = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x;
  const std::size_t step = static_cast<std::size_t>(gridDim.x) * blockDim.x / kDotLanes;
  // The warp's first row: the same for its lanes, so they all reach the shuffles.
  for (std::size_t w = thread / kWarp * kRowsPerWarp; w < rows; w += step) {
    const std::size_t i = w + lane / kDotLanes;
    float acc = 0;
    if (i < rows) {
      const std::size_t t = i % T, bh = i / T;
      const std::size_t b = bh / NH, h = bh % NH;
      const std::size_t offset = (b * T + t) * C + h * kD + part * 8;
      const int4 xv = *reinterpret_cast<const int4*>(dout + offset);
      const int4 yv = *reinterpret_cast<const int4*>(out + offset);
      const bf16* xs = reinterpret_cast<const bf16*>(&xv);
      const bf16* ys = reinterpret_cast<const bf16*>(&yv);
#pragma unroll
      for (int k = 0; k < 8; ++k) acc += __bfloat162float(xs[k]) * __bfloat162float(ys[k]);
    }
#pragma unroll
    for (int lanes = kDotLanes / 2; lanes > 0; lanes /= 2)
      acc += __shfl_xor_sync(0xffffffffu, acc, lanes);
    if (part == 0 && i < rows) dvec[i] = acc;
  }
}

// A block is kWarps warps of 16 rows each (kRows = 16 * kWarps <= 128 queries, or keys for
// dK/dV); it walks the other side in 64-row tiles, double-buffered in shared memory: the next
// tile's cp.async copies are in flight while the current tile is multiplied.

// Rows [row0, row0 + kNumRows) of a [T, kD] slice whose rows are row_stride apart, into shared
// memory rows kStride apart, by cp.async (the caller commits); rows at or past T are zeroed by
// plain stores. Visible to the block after cp_async_wait and __syncthreads. Each thread copies
// the same 16-byte column chunk of rows kRowsPerPass apart, so its addresses are set up once;
// only a tile that crosses T checks rows (a uniform branch).
template <int kNumRows, int kBlockThreads>
__device__ __forceinline__ void load_rows_async(bf16* tile, const bf16* src, int row0, int T,
                                                int row_stride) {
  constexpr int kChunks = kD / 8;  // 16-byte chunks per row
  constexpr int kRowsPerPass = kBlockThreads / kChunks;
  static_assert(kBlockThreads % kChunks == 0 && kNumRows % kRowsPerPass == 0);
  const int c = static_cast<int>(threadIdx.x) % kChunks * 8;
  const int r = static_cast<int>(threadIdx.x) / kChunks;
  bf16* dst = tile + r * kStride + c;
  const bf16* from = src + static_cast<std::size_t>(row0 + r) * row_stride + c;
  if (row0 + kNumRows <= T) {
#pragma unroll
    for (int i = 0; i < kNumRows / kRowsPerPass; ++i)
      cp_async16(dst + i * kRowsPerPass * kStride, from + i * kRowsPerPass * row_stride);
  } else {
#pragma unroll
    for (int i = 0; i < kNumRows / kRowsPerPass; ++i) {
      if (row0 + r + i * kRowsPerPass < T)
        cp_async16(dst + i * kRowsPerPass * kStride, from + i * kRowsPerPass * row_stride);
      else
        *reinterpret_cast<int4*>(dst + i * kRowsPerPass * kStride) = make_int4(0, 0, 0, 0);
    }
  }
}

// Shared memory of the dK/dV kernel, in kTileElements units: stage 0 (2 tiles), stage 1
// (2 tiles), then room for the block's own kRows x 2 rows staged once at the start (they start
// in stage 1, whose tiles they free once in registers, and spill past it when kRows > kTile).
template <int kRows>
constexpr int dkdv_tiles() {
  return 4 + std::max(0, 2 * kRows / kTile - 2);
}

// Shared memory of the dQ kernel: both stages, then the block's Q and dO, which stay there.
template <int kRows>
constexpr int dq_tiles() {
  return 4 + 2 * kRows / kTile;
}

// grid (query blocks, B * NH), the longest (last) query blocks first. A warp owns kM tiles of 16
// query rows (16 kM rows): every K and V fragment read from shared memory serves kM tiles. Static
// shared memory: stages 0 and 1 of K, V; the block's Q is staged in stage 1 before the loop.
template <int kWarps, int kM, int kMinBlocks>
__global__ void __launch_bounds__(32 * kWarps, kMinBlocks)
    flash_forward_pipelined_kernel(bf16* out, float* lse, const bf16* qkv, int T, int NH,
                                   float scale_log2) {
  constexpr int kWarpRows = 16 * kM, kRows = kWarpRows * kWarps, kBlockThreads = 32 * kWarps;
  static_assert(kRows <= 2 * kTile && kRows % kTile == 0);
  __shared__ alignas(16) bf16 smem[4 * kTileElements];  // [stage][K, V]
  const Head head = this_blocks_head(T, NH);
  const int C = head.C, bh = head.bh;
  const int q_block = gridDim.x - 1 - blockIdx.x;
  const int q0 = q_block * kRows;
  const bf16* q_base = qkv + head.qkv_offset;
  const bf16* k_base = q_base + C;
  const bf16* v_base = q_base + 2 * C;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int warp_row0 = q0 + warp * kWarpRows;
  // This thread's rows: warp_row0 + 16 mi + g + 8 r for row tile mi and half r.
  const int n_kt = (min(q0 + kRows, T) + kTile - 1) / kTile;  // key tiles seen

  bf16* const sQ = smem + 2 * kTileElements;
  load_rows_async<kRows, kBlockThreads>(sQ, q_base, q0, T, 3 * C);
  cp_async_commit();
  load_rows_async<kTile, kBlockThreads>(smem, k_base, 0, T, 3 * C);
  load_rows_async<kTile, kBlockThreads>(smem + kTileElements, v_base, 0, T, 3 * C);
  cp_async_commit();
  cp_async_wait<1>();  // Q is in
  __syncthreads();
  std::uint32_t qf[kM][kD / 16][4];
  load_a_fragments<kM>(qf, sQ + warp * kWarpRows * kStride, lane);
  __syncthreads();  // every warp has its Q fragments: stage 1 is free

  float o[kM][kD / 8][4];
  float m_run[kM][2], l_run[kM][2];
#pragma unroll
  for (int mi = 0; mi < kM; ++mi) {
    zero(o[mi]);
    m_run[mi][0] = m_run[mi][1] = -INFINITY;
    l_run[mi][0] = l_run[mi][1] = 0.0f;
  }
#pragma unroll 1
  for (int kt = 0; kt < n_kt; ++kt) {
    if (kt + 1 < n_kt) {
      bf16* next = smem + ((kt + 1) & 1) * 2 * kTileElements;
      load_rows_async<kTile, kBlockThreads>(next, k_base, (kt + 1) * kTile, T, 3 * C);
      load_rows_async<kTile, kBlockThreads>(next + kTileElements, v_base, (kt + 1) * kTile, T,
                                            3 * C);
    }
    cp_async_commit();   // possibly empty: keeps the group count uniform
    cp_async_wait<1>();  // tile kt is in
    __syncthreads();
    const int k0 = kt * kTile;
    // Keys all past this warp's rows: the tile would change nothing (alpha 1, p 0); skip it.
    if (k0 <= warp_row0 + kWarpRows - 1) {
      const bf16* sK = smem + (kt & 1) * 2 * kTileElements;
      const bf16* sV = sK + kTileElements;
      float s[kM][kTile / 8][4];
#pragma unroll
      for (int mi = 0; mi < kM; ++mi) zero(s[mi]);
      product_with_rows<kM>(s, qf, sK, lane);
      if (k0 + kTile - 1 > warp_row0) {  // warp-uniform: the other tiles skip the masking
#pragma unroll
        for (int mi = 0; mi < kM; ++mi)
          mask_keys_after_queries(s[mi], warp_row0 + 16 * mi, k0, g, t, -INFINITY);
      }
#pragma unroll
      for (int mi = 0; mi < kM; ++mi)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          float mx = fmaxf(s[mi][0][2 * r], s[mi][0][2 * r + 1]);
#pragma unroll
          for (int j = 1; j < kTile / 8; ++j)
            mx = fmaxf(mx, fmaxf(s[mi][j][2 * r], s[mi][j][2 * r + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          // Key 0 is visible to every row and tile 0 comes first, so the running maximum is
          // finite from then on; a row whose keys are all masked in a later tile gets alpha 1, p 0.
          // Maxima stay in unscaled score units: the scale goes into one FMA per score.
          const float m_new = fmaxf(m_run[mi][r], mx);
          const float alpha = fast_exp2((m_run[mi][r] - m_new) * scale_log2);
          const float offset = -m_new * scale_log2;
          m_run[mi][r] = m_new;
          l_run[mi][r] *= alpha;
#pragma unroll
          for (int n = 0; n < kD / 8; ++n) {
            o[mi][n][2 * r] *= alpha;
            o[mi][n][2 * r + 1] *= alpha;
          }
#pragma unroll
          for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
            for (int e = 2 * r; e < 2 * r + 2; ++e) {
              s[mi][j][e] = fast_exp2(fmaf(s[mi][j][e], scale_log2, offset));
              l_run[mi][r] += s[mi][j][e];
            }
        }
      product_with_tile<kM>(o, s, sV, lane);
    }
    __syncthreads();  // every warp is done with stage kt & 1 before it is refilled
  }
#pragma unroll
  for (int mi = 0; mi < kM; ++mi) {
    const int row_a = warp_row0 + 16 * mi + g;
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float l = l_run[mi][r];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      inv[r] = 1.0f / l;
      const int row = row_a + 8 * r;
      if (t == 0 && row < T)
        lse[static_cast<std::size_t>(bh) * T + row] = m_run[mi][r] * scale_log2 + __log2f(l);
    }
    store_rows(out + head.out_offset, o[mi], row_a, T, C, inv[0], inv[1], t);
  }
}

// dK, dV of one key block: loop over the 64-query tiles that see it. grid (key blocks, B * NH),
// block 0 (the longest) first. Dynamic shared memory: dkdv_tiles<kRows>() tiles; the
// block's K and V are staged past stage 0 while stage 0 receives the first Q, dO tile.
template <int kWarps, int kMinBlocks>
__global__ void __launch_bounds__(32 * kWarps, kMinBlocks)
    flash_backward_dkdv_pipelined_kernel(bf16* dqkv, const bf16* qkv, const bf16* dout,
                                         const float* lse, const float* dvec, int T, int NH,
                                         float scale_log2, float scale) {
  constexpr int kRows = 16 * kWarps, kBlockThreads = 32 * kWarps;
  static_assert(kRows <= 2 * kTile && kRows % kTile == 0);
  extern __shared__ __align__(16) unsigned char dynamic_smem[];
  bf16* const smem = reinterpret_cast<bf16*>(dynamic_smem);  // [stage][Q, dO], then staging
  __shared__ float sLse[2][kTile], sDvec[2][kTile];
  const Head head = this_blocks_head(T, NH);
  const int C = head.C, bh = head.bh;
  const std::size_t row_stride = 3 * static_cast<std::size_t>(C);
  const int k0 = blockIdx.x * kRows;
  const bf16* q_base = qkv + head.qkv_offset;
  const bf16* k_base = q_base + C;
  const bf16* v_base = q_base + 2 * C;
  const bf16* do_base = dout + head.out_offset;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int warp_key0 = k0 + warp * 16;
  const int key_a = warp_key0 + g;  // this thread's keys: key_a and key_a + 8
  const float* lse_bh = lse + static_cast<std::size_t>(bh) * T;
  const float* dvec_bh = dvec + static_cast<std::size_t>(bh) * T;
  const int first_qt = k0 / kTile;
  const int n_qt = (T + kTile - 1) / kTile - first_qt;  // query tiles seen (k0 < T: >= 1)

  // Q, dO (and the rows' lse, dvec) of query tile first_qt + i into stage i & 1.
  const auto load_stage = [&](int i) {
    const int s = i & 1, q0 = (first_qt + i) * kTile;
    bf16* sQ = smem + s * 2 * kTileElements;
    load_rows_async<kTile, kBlockThreads>(sQ, q_base, q0, T, 3 * C);
    load_rows_async<kTile, kBlockThreads>(sQ + kTileElements, do_base, q0, T, C);
    stage_query_stats(sLse[s], sDvec[s], lse_bh, dvec_bh, q0, T);
  };

  bf16* const sK = smem + 2 * kTileElements;
  bf16* const sV = sK + kRows * kStride;
  load_rows_async<kRows, kBlockThreads>(sK, k_base, k0, T, 3 * C);
  load_rows_async<kRows, kBlockThreads>(sV, v_base, k0, T, 3 * C);
  cp_async_commit();
  load_stage(0);
  cp_async_commit();
  cp_async_wait<1>();  // K, V are in
  __syncthreads();
  std::uint32_t kf[kD / 16][4], vf[kD / 16][4];
  load_a_fragments(kf, sK, warp, lane);
  load_a_fragments(vf, sV, warp, lane);
  __syncthreads();  // stage 1 is free

  float dk[kD / 8][4], dv[kD / 8][4];
  zero(dk);
  zero(dv);
#pragma unroll 1
  for (int i = 0; i < n_qt; ++i) {
    if (i + 1 < n_qt) load_stage(i + 1);
    cp_async_commit();
    cp_async_wait<1>();  // stage i & 1 is in
    __syncthreads();
    const int q0 = (first_qt + i) * kTile;
    // Queries all before this warp's keys: P is 0 and the tile changes nothing; skip it.
    if (q0 + kTile - 1 >= warp_key0) {
      const int s = i & 1;
      const bf16* sQ = smem + s * 2 * kTileElements;
      const bf16* sdO = sQ + kTileElements;
      // P^T = exp2(scale_log2 * K Q^T - lse) for this warp's 16 keys x 64 queries.
      float p[kTile / 8][4];
      zero(p);
      product_with_rows(p, kf, sQ, lane);
#pragma unroll
      for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          p[j][e] = fast_exp2(fmaf(p[j][e], scale_log2, -sLse[s][j * 8 + 2 * t + (e & 1)]));
      if (warp_key0 + 15 > q0)  // some key of the warp past some query (warp-uniform)
        mask_keys_after_queries<true>(p, warp_key0, q0, g, t, 0.0f);
      product_with_tile(dv, p, sdO, lane);  // dV += P^T dO
      float ds[kTile / 8][4];
      zero(ds);
      product_with_rows(ds, vf, sdO, lane);  // dP^T = V dO^T
#pragma unroll
      for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          ds[j][e] = p[j][e] * (ds[j][e] - sDvec[s][j * 8 + 2 * t + (e & 1)]);
      product_with_tile(dk, ds, sQ, lane);  // dK += dS^T Q
    }
    __syncthreads();  // every warp is done with stage i & 1 before it is refilled
  }
  bf16* dst = dqkv + head.qkv_offset;
  store_rows(dst + C, dk, key_a, T, row_stride, scale, scale, t);
  store_rows(dst + 2 * C, dv, key_a, T, row_stride, 1.0f, 1.0f, t);
}

// acc = A @ tile^T, A being the kM row tiles at `rows` in shared memory (their fragments are read
// here and dropped after the product).
template <int kM>
__device__ __forceinline__ void shared_rows_times_rows(float (&acc)[kM][kTile / 8][4],
                                                       const bf16* rows, const bf16* tile,
                                                       int lane) {
  std::uint32_t a[kM][kD / 16][4];
  load_a_fragments<kM>(a, rows, lane);
#pragma unroll
  for (int mi = 0; mi < kM; ++mi) zero(acc[mi]);
  product_with_rows<kM>(acc, a, tile, lane);
}

// dQ of one query block: loop over the key tiles it sees. grid (query blocks, B * NH), the
// longest (last) first. A warp owns kM tiles of 16 query rows: every K, V fragment read from
// shared memory serves kM tiles. Dynamic shared memory: dq_tiles<kRows>() tiles. The block's Q
// and dO stay in shared memory and their A fragments are read again for each key tile (holding
// them would not fit in 255 registers next to P, dS and dQ).
template <int kWarps, int kM, int kMinBlocks>
__global__ void __launch_bounds__(32 * kWarps, kMinBlocks)
    flash_backward_dq_pipelined_kernel(bf16* dqkv, const bf16* qkv, const bf16* dout,
                                       const float* lse, const float* dvec, int T, int NH,
                                       float scale_log2, float scale) {
  constexpr int kWarpRows = 16 * kM, kRows = kWarpRows * kWarps, kBlockThreads = 32 * kWarps;
  static_assert(kRows <= 2 * kTile && kRows % kTile == 0);
  extern __shared__ __align__(16) unsigned char dynamic_smem[];
  bf16* const smem = reinterpret_cast<bf16*>(dynamic_smem);  // [stage][K, V], then staging
  const Head head = this_blocks_head(T, NH);
  const int C = head.C, bh = head.bh;
  const std::size_t row_stride = 3 * static_cast<std::size_t>(C);
  const int q_block = gridDim.x - 1 - blockIdx.x;
  const int q0 = q_block * kRows;
  const bf16* q_base = qkv + head.qkv_offset;
  const bf16* k_base = q_base + C;
  const bf16* v_base = q_base + 2 * C;
  const bf16* do_base = dout + head.out_offset;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int warp_row0 = q0 + warp * kWarpRows;
  const int n_kt = (min(q0 + kRows, T) + kTile - 1) / kTile;  // key tiles seen

  bf16* const sQ = smem + 4 * kTileElements;  // past both stages: read for every key tile
  bf16* const sdO = sQ + kRows * kStride;
  load_rows_async<kRows, kBlockThreads>(sQ, q_base, q0, T, 3 * C);
  load_rows_async<kRows, kBlockThreads>(sdO, do_base, q0, T, C);
  cp_async_commit();
  load_rows_async<kTile, kBlockThreads>(smem, k_base, 0, T, 3 * C);
  load_rows_async<kTile, kBlockThreads>(smem + kTileElements, v_base, 0, T, 3 * C);
  cp_async_commit();
  float row_lse[kM][2], row_dvec[kM][2];
#pragma unroll
  for (int mi = 0; mi < kM; ++mi)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = warp_row0 + 16 * mi + g + 8 * r;
      row_lse[mi][r] = row < T ? lse[static_cast<std::size_t>(bh) * T + row] : INFINITY;
      row_dvec[mi][r] = row < T ? dvec[static_cast<std::size_t>(bh) * T + row] : 0.0f;
    }
  const bf16* const warp_q = sQ + warp * kWarpRows * kStride;
  const bf16* const warp_do = sdO + warp * kWarpRows * kStride;

  float dq[kM][kD / 8][4];
#pragma unroll
  for (int mi = 0; mi < kM; ++mi) zero(dq[mi]);
#pragma unroll 1
  for (int kt = 0; kt < n_kt; ++kt) {
    if (kt + 1 < n_kt) {
      bf16* next = smem + ((kt + 1) & 1) * 2 * kTileElements;
      load_rows_async<kTile, kBlockThreads>(next, k_base, (kt + 1) * kTile, T, 3 * C);
      load_rows_async<kTile, kBlockThreads>(next + kTileElements, v_base, (kt + 1) * kTile, T,
                                            3 * C);
    }
    cp_async_commit();
    cp_async_wait<1>();  // tile kt (and, the first time, Q and dO) is in
    __syncthreads();
    const int k0 = kt * kTile;
    // Keys all past this warp's rows: P is 0 and the tile changes nothing; skip it.
    if (k0 <= warp_row0 + kWarpRows - 1) {
      const bf16* sK = smem + (kt & 1) * 2 * kTileElements;
      const bf16* sV = sK + kTileElements;
      float p[kM][kTile / 8][4];
      shared_rows_times_rows<kM>(p, warp_q, sK, lane);  // S = Q K^T
#pragma unroll
      for (int mi = 0; mi < kM; ++mi)
#pragma unroll
        for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            p[mi][j][e] = fast_exp2(fmaf(p[mi][j][e], scale_log2, -row_lse[mi][e >> 1]));
      if (k0 + kTile - 1 > warp_row0) {  // some key past some row of the warp (warp-uniform)
#pragma unroll
        for (int mi = 0; mi < kM; ++mi)
          mask_keys_after_queries(p[mi], warp_row0 + 16 * mi, k0, g, t, 0.0f);
      }
      float ds[kM][kTile / 8][4];
      shared_rows_times_rows<kM>(ds, warp_do, sV, lane);  // dP = dO V^T
#pragma unroll
      for (int mi = 0; mi < kM; ++mi)
#pragma unroll
        for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            ds[mi][j][e] = p[mi][j][e] * (ds[mi][j][e] - row_dvec[mi][e >> 1]);
      product_with_tile<kM>(dq, ds, sK, lane);  // dQ += dS K
    }
    __syncthreads();  // every warp is done with stage kt & 1 before it is refilled
  }
#pragma unroll
  for (int mi = 0; mi < kM; ++mi)
    store_rows(dqkv + head.qkv_offset, dq[mi], warp_row0 + 16 * mi + g, T, row_stride, scale, scale,
               t);
}

}  // namespace

// The launch shapes: kWarps warps of kRowTiles x 16 rows per block, at least kMinBlocks blocks
// per SM. ptxas (sm_90a): forward 255 registers, no spill; dQ 255 registers, 12 bytes spilled;
// dK/dV 254 registers, no spill. Measured on an H200 (124M shape, Nsight Compute), two row tiles
// per warp took the forward from 0.355 to 0.317 ms per layer and dQ from 0.416 to 0.376 ms
// against one tile per warp (8 warps, 2 blocks per SM, 128 registers); dK/dV keeps one tile per
// warp, since two would need its dK and dV accumulators twice over.
constexpr int kForwardWarps = 4, kForwardRowTiles = 2, kForwardMinBlocks = 2;  // 128 queries
constexpr int kDkdvWarps = 8, kDkdvMinBlocks = 1;                              // 128 keys
constexpr int kDqWarps = 4, kDqRowTiles = 2, kDqMinBlocks = 2;                 // 128 queries

bool flash_attention_supported(int head_dim) {
  return head_dim == kD;
}

bool flash_wgmma_available() {
  if (!sm90::built()) return false;
  int device = 0, major = 0, minor = 0;
  BTM_CUDA_CHECK(cudaGetDevice(&device));
  BTM_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  BTM_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  return major == 9 && minor == 0;  // sm_90a code runs on compute capability 9.0 only
}

namespace {
// The signature both backward kernels share.
using BackwardKernel = void (*)(bf16*, const bf16*, const bf16*, const float*, const float*, int,
                                int, float, float);

// Launches a backward kernel of kWarps warps (16 kM rows each, so 16 kM kWarps rows per block)
// with kTiles tiles of dynamic shared memory, raising the kernel's limit above 48 KB.
template <int kWarps, int kM, int kTiles>
void launch_backward(BackwardKernel kernel, int B, int T, int NH, cudaStream_t stream, bf16* dqkv,
                     const bf16* qkv, const bf16* dout, const float* lse, const float* dvec) {
  constexpr int kRows = 16 * kM * kWarps;
  constexpr std::size_t shared = static_cast<std::size_t>(kTiles) * kTileElements * sizeof(bf16);
  if constexpr (shared > 49152)
    BTM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(shared)));
  const dim3 grid((T + kRows - 1) / kRows, B * NH);
  kernel<<<grid, 32 * kWarps, shared, stream>>>(dqkv, qkv, dout, lse, dvec, T, NH, kScaleLog2,
                                                kScale);
  BTM_CUDA_CHECK_LAUNCH();
}

// Whether `kernels` resolves to the wgmma ones; refuses wgmma where they cannot run.
bool use_wgmma(FlashKernels kernels) {
  switch (kernels) {
    case FlashKernels::automatic:
      return flash_wgmma_available();
    case FlashKernels::mma_sync:
      return false;
    case FlashKernels::wgmma:
      if (!flash_wgmma_available())
        throw InputError(
            "flash attention: the wgmma kernels need an sm_90a build (CMAKE_CUDA_ARCHITECTURES "
            "with 90a) and a compute capability 9.0 GPU");
      return true;
  }
  return false;
}
}  // namespace

void flash_attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                             cudaStream_t stream, FlashKernels kernels) {
  (void)C;
  check_offsets(T, NH);
  if (use_wgmma(kernels)) return sm90::flash_forward(out, lse, qkv, B, T, NH, stream);
  constexpr int kRows = 16 * kForwardRowTiles * kForwardWarps;
  const dim3 grid((T + kRows - 1) / kRows, B * NH);
  flash_forward_pipelined_kernel<kForwardWarps, kForwardRowTiles, kForwardMinBlocks>
      <<<grid, 32 * kForwardWarps, 0, stream>>>(out, lse, qkv, T, NH, kScaleLog2);
  BTM_CUDA_CHECK_LAUNCH();
}

void flash_attention_backward(bf16* dqkv, float* dvec, const bf16* dout, const bf16* qkv,
                              const bf16* out, const float* lse, int B, int T, int C, int NH,
                              cudaStream_t stream, FlashKernels kernels) {
  (void)C;
  check_offsets(T, NH);
  const std::size_t rows = static_cast<std::size_t>(B) * T * NH;
  // Whole warps per block (the shuffles need every lane): 256 threads, 32 rows per block.
  flash_backward_dot_kernel<<<static_cast<unsigned>(
                                  std::min<std::size_t>((rows * kDotLanes + 255) / 256, 65536)),
                              256, 0, stream>>>(dvec, dout, out, B, T, NH);
  BTM_CUDA_CHECK_LAUNCH();
  if (use_wgmma(kernels)) return sm90::flash_backward(dqkv, dout, qkv, lse, dvec, B, T, NH, stream);
  launch_backward<kDkdvWarps, 1, dkdv_tiles<16 * kDkdvWarps>()>(
      flash_backward_dkdv_pipelined_kernel<kDkdvWarps, kDkdvMinBlocks>, B, T, NH, stream, dqkv, qkv,
      dout, lse, dvec);
  launch_backward<kDqWarps, kDqRowTiles, dq_tiles<16 * kDqRowTiles * kDqWarps>()>(
      flash_backward_dq_pipelined_kernel<kDqWarps, kDqRowTiles, kDqMinBlocks>, B, T, NH, stream,
      dqkv, qkv, dout, lse, dvec);
}

}  // namespace btm::cuda

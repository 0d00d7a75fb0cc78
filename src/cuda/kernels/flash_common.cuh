// flash_common.cuh: what the two flash attention implementations share (flash_attention.cu,
// mma.sync for sm_80 and later; flash_attention_sm90.cu, wgmma for sm_90a): the head dimension and
// tile size, cp.async copies, bf16 packing, exp2, a block's head, the causal mask, the staging of
// the queries' statistics for dK/dV and the store of a 16-row accumulator.
// Internal to src/cuda.
#pragma once

#include <cuda_bf16.h>

#include <cstddef>
#include <cstdint>
#include <limits>

#include "btm/cuda/kernels/bf16.hpp"
#include "btm/util/error.hpp"

namespace btm::cuda::flash {

constexpr int kD = 64;     // head dimension
constexpr int kTile = 64;  // queries and keys per tile
constexpr int kWarp = 32;

__device__ __forceinline__ std::uint32_t smem_address(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
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

__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_address(dst)), "l"(src)
               : "memory");
}

__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(smem_address(dst)), "l"(src)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Waits until at most N of this thread's most recent cp.async groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Where one (batch, head) lives, blockIdx.y = b * NH + h: its q, k, v in qkv [B, T, 3C] (rows
// 3C apart; dq, dk, dv at the same offsets in dqkv) and its rows of the [B, T, C] tensors out
// and dout (rows C apart).
struct Head {
  int bh, C;
  std::size_t qkv_offset;  // q of the head's row 0; k and v C and 2C further
  std::size_t out_offset;  // the head's row 0 of out or dout
};
__device__ __forceinline__ Head this_blocks_head(int T, int NH) {
  const int bh = blockIdx.y, b = bh / NH, h = bh % NH, C = NH * kD;
  return {bh, C, static_cast<std::size_t>(b) * T * 3 * C + h * kD,
          static_cast<std::size_t>(b) * T * C + h * kD};
}

// The causal mask on a 16 x 64 tile in the mma C layout (rows row0 + g and row0 + g + 8,
// columns col0 + 8 j + 2 t + {0, 1}): entries whose key comes after their query become `fill`.
// Rows are queries and columns keys, or the other way round (kRowsAreKeys: dK/dV's tiles).
template <bool kRowsAreKeys = false>
__device__ __forceinline__ void mask_keys_after_queries(float (&s)[kTile / 8][4], int row0,
                                                        int col0, int g, int t, float fill) {
#pragma unroll
  for (int j = 0; j < kTile / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = row0 + g + 8 * (e >> 1), col = col0 + 8 * j + 2 * t + (e & 1);
      if (kRowsAreKeys ? row > col : col > row) s[j][e] = fill;
    }
}

// The log2-sum-exp and dO.O of the 64 queries of tile q0 into shared memory, by cp.async from
// threads 0-63 (the caller commits); queries at or past T get lse = inf (probability 0), dvec 0.
__device__ __forceinline__ void stage_query_stats(float* s_lse, float* s_dvec, const float* lse_bh,
                                                  const float* dvec_bh, int q0, int T) {
  if (threadIdx.x >= kTile) return;
  const int q = q0 + static_cast<int>(threadIdx.x);
  if (q < T) {
    cp_async4(s_lse + threadIdx.x, lse_bh + q);
    cp_async4(s_dvec + threadIdx.x, dvec_bh + q);
  } else {
    s_lse[threadIdx.x] = INFINITY;
    s_dvec[threadIdx.x] = 0.0f;
  }
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

// The kernels address rows within one batch row of qkv with int offsets.
inline void check_offsets(int T, int NH) {
  if (static_cast<long long>(T) * 3 * NH * kD > std::numeric_limits<int>::max())
    throw InputError(
        "flash attention: T * 3 * d_model must stay below 2^31 (use a shorter "
        "sequence or the materialized attention)");
}

// softmax(q.k / sqrt(kD)) is computed as exp2(q.k * kScaleLog2 - lse).
constexpr float kScale = 0.125f;  // 1 / sqrt(64)
constexpr float kScaleLog2 = kScale * 1.4426950408889634f;

}  // namespace btm::cuda::flash

// flash_common.cuh: what the two flash attention implementations share (flash_attention.cu,
// mma.sync for sm_80 and later; flash_attention_sm90.cu, wgmma for sm_90a): the head dimension and
// tile size, cp.async copies, bf16 packing, exp2, and the store of a 16-row accumulator.
// Internal to src/cuda.
#pragma once

#include <cuda_bf16.h>

#include <cstddef>
#include <cstdint>
#include <limits>

#include "btm/cuda_kernels.hpp"
#include "btm/error.hpp"

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

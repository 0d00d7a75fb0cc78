// common.cuh: what the kernels of src/cuda/kernels/ share (the flash attention has its own,
// flash_common.cuh): the warp and its shuffles, memory-bound kernels' 16-byte packs of 8 bf16
// (a scalar variant covers rows whose length or alignment does not allow them), the grid of a
// grid-stride loop, the SM count and the row lanes of the column reductions. Internal to
// src/cuda.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "btm/cuda/check.hpp"
#include "btm/cuda/kernels/bf16.hpp"

namespace btm::cuda {
namespace {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

inline int sm_count() {
  int device = 0, sms = 0;
  BTM_CUDA_CHECK(cudaGetDevice(&device));
  BTM_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

// Blocks for a grid-stride loop over `work` items: enough to fill the GPU, never more than needed.
inline unsigned grid_for(std::size_t work, int threads) {
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

inline bool aligned16(const void* p) {
  return reinterpret_cast<std::uintptr_t>(p) % 16 == 0;
}

// Row lanes of the blocks (32, kReduceLanes) that add per-block partial sums column by column
// (layernorm_backward_reduce_kernel, bias_backward_reduce_kernel).
constexpr int kReduceLanes = 16;

}  // namespace
}  // namespace btm::cuda

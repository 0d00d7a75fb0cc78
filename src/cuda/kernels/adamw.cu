// adamw.cu: the AdamW update of the flat parameter vector (cuda/kernels/adamw.hpp): float4
// accesses where the segments allow them, the decay per segment, the clip factor and the skip
// of a non-finite step read on the device.
#include <cstddef>
#include <cstdint>

#include "btm/cuda/check.hpp"
#include "btm/cuda/kernels/adamw.hpp"
#include "common.cuh"

namespace btm::cuda {
namespace {

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

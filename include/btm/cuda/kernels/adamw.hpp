// adamw.hpp: the AdamW update of the flat parameter vector, with per-tensor weight decay,
// gradient clipping and the skip of a non-finite step (kernels/adamw.cu).
#pragma once

#include <cstddef>
#include <cstdint>

#include "btm/cuda/kernels/bf16.hpp"

namespace btm::cuda {

// The weight-decay segments of a flat vector: segment s covers [ends[s-1], ends[s]).
struct DecaySegments {
  const std::uint64_t* ends = nullptr;  // device, ascending, ends[count-1] = n
  const std::uint8_t* decay = nullptr;  // device, 1 where the segment's tensor decays
  int count = 0;
  bool ends_multiple_of_4 = false;  // lets the kernel update 4 floats per access
};
// AdamW as cpu::adamw_update over all n elements, with decay per segment, the gradient scaled
// by the clip factor min(1, grad_clip / (sqrt(*sumsq) + 1e-6)) (1 if grad_clip <= 0 or sumsq is
// null), and params_bf16 refreshed from the updated fp32 parameters. When sumsq is not null and
// *sumsq is not finite (a NaN or infinite gradient), p, p_bf16, m and v are left unchanged: the
// kernel reads *sumsq on the device, so skipping a step needs no host synchronisation.
void adamw_update(float* p, bf16* p_bf16, const float* g, float* m, float* v, std::size_t n,
                  const DecaySegments& segments, float lr, float beta1, float beta2, float eps,
                  float weight_decay, float bias1, float bias2, const double* sumsq,
                  float grad_clip, cudaStream_t stream);

}  // namespace btm::cuda

// layernorm.hpp: LayerNorm over the last dimension, forward and backward
// (kernels/layernorm.cpp).
#pragma once

namespace btm::cpu {

constexpr float kLayerNormEps = 1e-5f;

// LayerNorm over the last dim of inp[N, C]; saves mean[N] and rstd[N] for the backward.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                       const float* b, int N, int C);
void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                        const float* w, const float* mean, const float* rstd, int N, int C);

}  // namespace btm::cpu

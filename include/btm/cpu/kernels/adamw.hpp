// adamw.hpp: the AdamW update of one tensor (kernels/adamw.cpp).
#pragma once

#include <cstddef>

namespace btm::cpu {

// AdamW on one tensor. bias1 = 1 - beta1^t, bias2 = 1 - beta2^t; g is multiplied by grad_scale
// (the clipping factor) before use.
void adamw_update(float* p, const float* g, float* m, float* v, std::size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, float bias1, float bias2,
                  float grad_scale);

}  // namespace btm::cpu

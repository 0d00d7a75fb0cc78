// adamw.cpp: the fp32 reference AdamW update (cpu/kernels/adamw.hpp).
#include <cmath>
#include <cstddef>

#include "btm/cpu/kernels/adamw.hpp"
#include "common.hpp"

namespace btm::cpu {

void adamw_update(float* p, const float* g, float* m, float* v, std::size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, float bias1, float bias2,
                  float grad_scale) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const float grad = g[i] * grad_scale;
    m[i] = beta1 * m[i] + (1.0f - beta1) * grad;
    v[i] = beta2 * v[i] + (1.0f - beta2) * grad * grad;
    const float m_hat = m[i] / bias1;
    const float v_hat = v[i] / bias2;
    // Decoupled decay uses the parameter before this step, as PyTorch's p.mul_(1 - lr * wd).
    p[i] -= lr * (m_hat / (std::sqrt(v_hat) + eps) + weight_decay * p[i]);
  }
}

}  // namespace btm::cpu

// residual.cpp: the fp32 reference residual connection (cpu/kernels/residual.hpp).
#include <cstddef>

#include "btm/cpu/kernels/residual.hpp"
#include "common.hpp"

namespace btm::cpu {

void residual_forward(float* out, const float* a, const float* b, std::size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

}  // namespace btm::cpu

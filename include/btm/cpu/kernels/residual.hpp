// residual.hpp: the residual connection (kernels/residual.cpp).
#pragma once

#include <cstddef>

namespace btm::cpu {

// out = a + b
void residual_forward(float* out, const float* a, const float* b, std::size_t n);

}  // namespace btm::cpu

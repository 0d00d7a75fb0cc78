// gelu.hpp: GELU, forward and backward (kernels/gelu.cpp).
#pragma once

#include <cstddef>

namespace btm::cpu {

// GELU, tanh approximation (GPT-2's).
void gelu_forward(float* out, const float* inp, std::size_t n);
void gelu_backward(float* dinp, const float* inp, const float* dout, std::size_t n);

}  // namespace btm::cpu

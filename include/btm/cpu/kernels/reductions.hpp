// reductions.hpp: the sum of squares of a vector (the gradient norm) (kernels/reductions.cpp).
#pragma once

#include <cstddef>

namespace btm::cpu {

// Sum of squares of g[0..n), in double.
double sum_of_squares(const float* g, std::size_t n);

}  // namespace btm::cpu

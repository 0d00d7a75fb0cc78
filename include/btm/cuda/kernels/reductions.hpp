// reductions.hpp: whole-vector reductions in a fixed order (kernels/reductions.cu): the mean of
// the losses and the sum of squares of the gradient (its norm, for clipping).
#pragma once

#include <cstddef>

#include "btm/cuda/kernels/bf16.hpp"

namespace btm::cuda {

// out[0] = mean of values[0..n), summed in a fixed order.
void mean_of(float* out, const float* values, int n, cudaStream_t stream);

// Floats of scratch (as doubles) global_sum_of_squares needs.
std::size_t sum_of_squares_scratch_doubles();
// out[0] = sum of g[i]^2 over [0, n), in double, fixed order.
void sum_of_squares(double* out, double* scratch, const float* g, std::size_t n,
                    cudaStream_t stream);

}  // namespace btm::cuda

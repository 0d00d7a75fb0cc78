// bias.hpp: the bias gradient of a linear layer, column sums in a fixed order (kernels/bias.cu).
#pragma once

#include <cstddef>

#include "btm/cuda/kernels/bf16.hpp"

namespace btm::cuda {

std::size_t bias_backward_scratch_floats(int OC);
// dbias[OC] += column sums of dout[N, OC].
void bias_backward(float* dbias, float* scratch, const bf16* dout, int N, int OC,
                   cudaStream_t stream);

}  // namespace btm::cuda

// gelu.hpp: GELU, tanh approximation (GPT-2's), forward and backward (kernels/gelu.cu).
#pragma once

#include <cstddef>

#include "btm/cuda/kernels/bf16.hpp"

namespace btm::cuda {

void gelu_forward(bf16* out, const bf16* inp, std::size_t n, cudaStream_t stream);
// dinp may alias dout.
void gelu_backward(bf16* dinp, const bf16* inp, const bf16* dout, std::size_t n,
                   cudaStream_t stream);

}  // namespace btm::cuda

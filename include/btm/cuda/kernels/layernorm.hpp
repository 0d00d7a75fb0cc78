// layernorm.hpp: LayerNorm over the last dimension, forward and backward (kernels/layernorm.cu).
#pragma once

#include <cstddef>

#include "btm/cuda/kernels/bf16.hpp"

namespace btm::cuda {

void layernorm_forward(bf16* out, float* mean, float* rstd, const bf16* inp, const bf16* w,
                       const bf16* b, int N, int C, cudaStream_t stream);
// Floats of scratch layernorm_backward needs for rows of C channels.
std::size_t layernorm_backward_scratch_floats(int C);
// dinp = (accumulate ? dinp : 0) + d/dinp; dw += ..., db += ... (fp32). dinp must not alias dout.
void layernorm_backward(bf16* dinp, float* dw, float* db, float* scratch, const bf16* dout,
                        const bf16* inp, const bf16* w, const float* mean, const float* rstd, int N,
                        int C, bool accumulate, cudaStream_t stream);

}  // namespace btm::cuda

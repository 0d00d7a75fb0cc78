// crossentropy.hpp: the classifier's softmax and cross-entropy, with the logits' gradient
// (training, bf16) or without (evaluation, fp32) (kernels/crossentropy.cu).
#pragma once

#include <cstdint>

#include "btm/cuda/kernels/bf16.hpp"

namespace btm::cuda {

// Softmax over the first V of Vp logits per row and cross-entropy against targets (device):
// losses[i] = -log p(targets[i]); if dlogits is not null it receives (p - onehot) * dloss
// (0 in the padded columns); dlogits may alias logits.
void crossentropy_forward_backward(float* losses, bf16* dlogits, const bf16* logits,
                                   const std::int32_t* targets, int N, int V, int Vp, float dloss,
                                   cudaStream_t stream);
// The same on fp32 logits without gradient (evaluation).
void crossentropy_forward(float* losses, const float* logits, const std::int32_t* targets, int N,
                          int V, int Vp, cudaStream_t stream);

}  // namespace btm::cuda

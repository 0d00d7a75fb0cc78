// crossentropy.hpp: the classifier's softmax and cross-entropy with the logits' gradient
// (kernels/crossentropy.cpp).
#pragma once

#include <cstdint>

namespace btm::cpu {

// Softmax over the first V of Vp logits of each row, cross-entropy against targets.
// losses[i] = -log p(targets[i]); if dlogits is not null it receives (p - onehot) * dloss for
// j < V and 0 for the padded columns (dlogits may alias logits).
void crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                   const std::int32_t* targets, int N, int V, int Vp, float dloss);

}  // namespace btm::cpu

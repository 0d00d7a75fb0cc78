// attention.hpp: causal multi-head self-attention, forward and backward
// (kernels/attention.cpp).
#pragma once

namespace btm::cpu {

// Causal multi-head attention. qkv[B, T, 3C] holds q | k | v; head h uses columns h*hs..(h+1)*hs
// of each. out[B, T, C]; att[B, NH, T, T] keeps the softmax probabilities for the backward.
void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH);
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int B,
                        int T, int C, int NH);

}  // namespace btm::cpu

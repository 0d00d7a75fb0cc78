// kernels.hpp: the plain fp32 CPU reference of every layer of the model. The CPU engine is
// built from these; every CUDA kernel is tested against them (tests/test_kernels.cpp).
// Conventions: row-major; weights are [out, in]; activation gradients (dinp, dqkv, ...) are
// OVERWRITTEN; parameter gradients (dw, db, dwte, ...) are ACCUMULATED (+=).
#pragma once

#include <cstddef>
#include <cstdint>

namespace btm::cpu {

constexpr float kLayerNormEps = 1e-5f;

// out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]
void encoder_forward(float* out, const std::int32_t* inp, const float* wte, const float* wpe, int B,
                     int T, int C);
void encoder_backward(float* dwte, float* dwpe, const float* dout, const std::int32_t* inp, int B,
                      int T, int C);

// LayerNorm over the last dim of inp[N, C]; saves mean[N] and rstd[N] for the backward.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                       const float* b, int N, int C);
void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                        const float* w, const float* mean, const float* rstd, int N, int C);

// out[N, OC] = inp[N, IC] @ w[OC, IC]^T + bias[OC] (bias may be null).
void matmul_forward(float* out, const float* inp, const float* w, const float* bias, int N, int IC,
                    int OC);
// dinp = dout @ w; dw += dout^T @ inp; dbias += column sums of dout (dbias may be null).
void matmul_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                     const float* w, int N, int IC, int OC);

// Causal multi-head attention. qkv[B, T, 3C] holds q | k | v; head h uses columns h*hs..(h+1)*hs
// of each. out[B, T, C]; att[B, NH, T, T] keeps the softmax probabilities for the backward.
void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH);
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int B,
                        int T, int C, int NH);

// GELU, tanh approximation (GPT-2's).
void gelu_forward(float* out, const float* inp, std::size_t n);
void gelu_backward(float* dinp, const float* inp, const float* dout, std::size_t n);

// out = a + b
void residual_forward(float* out, const float* a, const float* b, std::size_t n);

// Softmax over the first V of Vp logits of each row, cross-entropy against targets.
// losses[i] = -log p(targets[i]); if dlogits is not null it receives (p - onehot) * dloss for
// j < V and 0 for the padded columns (dlogits may alias logits).
void crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                   const std::int32_t* targets, int N, int V, int Vp, float dloss);

// Sum of squares of g[0..n), in double.
double sum_of_squares(const float* g, std::size_t n);
// AdamW on one tensor. bias1 = 1 - beta1^t, bias2 = 1 - beta2^t; g is multiplied by grad_scale
// (the clipping factor) before use.
void adamw_update(float* p, const float* g, float* m, float* v, std::size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, float bias1, float bias2,
                  float grad_scale);

}  // namespace btm::cpu

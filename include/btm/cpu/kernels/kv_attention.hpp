// kv_attention.hpp: causal multi-head attention of new positions over a key/value cache, the
// decoding step of text generation (kernels/kv_attention.cpp).
#pragma once

namespace btm::cpu {

// B sequences each append n tokens at positions pos..pos+n-1 (pos + n <= cap). qkv[B, n, 3C]
// holds their q | k | v (head h: columns h*hs..(h+1)*hs of each). Their keys and values are
// written into k_cache and v_cache [B, NH, cap, hs] at those positions; then out[B, n, C] is
// the attention of each new query (position p) over the cached positions 0..p. The same numbers
// as attention_forward on the whole sequences, up to rounding (scores as plain dot products,
// softmax sums in double).
void kv_attention_forward(float* out, float* k_cache, float* v_cache, const float* qkv, int B,
                          int n, int pos, int cap, int C, int NH);

}  // namespace btm::cpu

// kv_attention.hpp: causal attention of new positions over a bf16 key/value cache, the decoding
// step of text generation (kernels/kv_attention.cu); cpu::kv_attention_forward is its
// reference.
#pragma once

#include "btm/cuda/kernels/bf16.hpp"

namespace btm::cuda {

// B sequences each append n tokens at positions pos..pos+n-1 (pos + n <= cap). qkv[B, n, 3C]
// holds their q | k | v. Their keys and values go into k_cache and v_cache [B, NH, cap, hs] at
// those positions; then out[B, n, C] is the attention of each new query (position p) over the
// cached positions 0..p: one block per (sequence, head, query), fp32 scores and sums in a fixed
// order (deterministic), the scores of a query in shared memory (cap floats: cap <= 8192).
void kv_attention_forward(bf16* out, bf16* k_cache, bf16* v_cache, const bf16* qkv, int B, int n,
                          int pos, int cap, int C, int NH, cudaStream_t stream);

// The largest cache kv_attention_forward takes.
inline constexpr int kKvAttentionMaxCapacity = 8192;

}  // namespace btm::cuda

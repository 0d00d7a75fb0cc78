// attention.hpp: the materialized causal self-attention (kernels/attention.cu): the head
// split and merge, the causal softmax and the attention built from them and batched GEMMs,
// keeping the T x T probabilities. The fused kernels without them are in flash_attention.hpp.
#pragma once

#include "btm/cuda/kernels/bf16.hpp"
#include "btm/cuda/kernels/blas.hpp"

namespace btm::cuda {

// out[b, h, t, :] = inp[(b*T + t) * row_stride + col_offset + h*hs + 0..hs) and its inverse.
void heads_split(bf16* out, const bf16* inp, int B, int T, int NH, int hs, int row_stride,
                 int col_offset, cudaStream_t stream);
void heads_merge(bf16* out, const bf16* inp, int B, int T, int NH, int hs, int row_stride,
                 int col_offset, cudaStream_t stream);
// Causal softmax of scale * rows of preatt[BH, T, T] (in place allowed); zeros above the
// diagonal. Backward: dpreatt = scale * att * (datt - sum(att * datt)), in place allowed.
void softmax_causal_forward(bf16* att, const bf16* preatt, int BH, int T, float scale,
                            cudaStream_t stream);
void softmax_causal_backward(bf16* dpreatt, const bf16* datt, const bf16* att, int BH, int T,
                             float scale, cudaStream_t stream);

// Causal self-attention from qkv[B, T, 3C] (q | k | v) to out[B, T, C], materialising the
// probabilities att[B, NH, T, T] (kept for the backward). qkvr[3, B, NH, T, hs] receives the
// per-head q, k, v (kept for the backward); vaccum is [B, T, C] scratch.
void attention_forward(Blas& blas, bf16* out, bf16* qkvr, bf16* att, bf16* vaccum, const bf16* qkv,
                       int B, int T, int C, int NH, cudaStream_t stream);
// dqkv[B, T, 3C] from dout[B, T, C]. Scratch: dqkvr (3 * B*T*C), datt (B*NH*T*T), dvaccum (B*T*C).
void attention_backward(Blas& blas, bf16* dqkv, bf16* dqkvr, bf16* datt, bf16* dvaccum,
                        const bf16* dout, const bf16* qkvr, const bf16* att, int B, int T, int C,
                        int NH, cudaStream_t stream);

}  // namespace btm::cuda

// flash_attention.hpp: the fused causal self-attention for head dimension 64, no T x T matrix
// (kernels/flash_attention.cu, and kernels/flash_attention_sm90.cu on Hopper).
#pragma once

#include "btm/cuda/kernels/bf16.hpp"

namespace btm::cuda {

// flash_attention_supported() holds. lse[B, NH, T] keeps each row's log2-sum-exp of the scaled
// scores for the backward. The backward fills all of dqkv[B, T, 3C]; dvec is [B, NH, T] scratch.
// Two implementations: wgmma (Hopper: an sm_90a build on a compute capability 9.0 GPU) and
// mma.sync (sm_80 and later); `automatic` takes wgmma where it can run, `wgmma` throws where it
// cannot. Both give the same results up to fp32 summation order.
enum class FlashKernels { automatic, mma_sync, wgmma };
bool flash_attention_supported(int head_dim);
bool flash_wgmma_available();
void flash_attention_forward(bf16* out, float* lse, const bf16* qkv, int B, int T, int C, int NH,
                             cudaStream_t stream, FlashKernels kernels = FlashKernels::automatic);
void flash_attention_backward(bf16* dqkv, float* dvec, const bf16* dout, const bf16* qkv,
                              const bf16* out, const float* lse, int B, int T, int C, int NH,
                              cudaStream_t stream, FlashKernels kernels = FlashKernels::automatic);

}  // namespace btm::cuda

// encoder.hpp: the token and position embeddings, forward and backward (kernels/encoder.cu).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "btm/cuda/kernels/bf16.hpp"

namespace btm::cuda {

// out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]; inp on the device.
void encoder_forward(bf16* out, const std::int32_t* inp, const bf16* wte, const bf16* wpe, int B,
                     int T, int C, cudaStream_t stream);

// The positions of a batch grouped by token id (a counting sort on the host), so that the
// embedding gradient is summed per token in a fixed order instead of with atomics.
struct TokenBuckets {
  std::vector<std::int32_t> tokens;     // the distinct token ids, ascending
  std::vector<std::int32_t> offsets;    // bucket u holds positions[offsets[u] .. offsets[u+1])
  std::vector<std::int32_t> positions;  // row indices b*T + t, ascending inside a bucket
  void build(const std::int32_t* inp, std::size_t n, int vocab);
};
// dwte[tokens[u], :] += sum over the bucket's positions p of dout[p, :].
void encoder_backward_wte(float* dwte, const bf16* dout, const std::int32_t* bucket_tokens,
                          const std::int32_t* bucket_offsets, const std::int32_t* positions,
                          int num_buckets, int C, cudaStream_t stream);
// dwpe[t, :] += sum over b of dout[b, t, :].
void encoder_backward_wpe(float* dwpe, const bf16* dout, int B, int T, int C, cudaStream_t stream);

}  // namespace btm::cuda

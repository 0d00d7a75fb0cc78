// conversions.hpp: fp32 <-> bf16 copies on the device (kernels/conversions.cu).
#pragma once

#include <cstddef>

#include "btm/cuda/kernels/bf16.hpp"

namespace btm::cuda {

// out[i] = bf16(in[i]) (round to nearest even) and out[i] = float(in[i]) (exact), i < n.
void float_to_bf16(bf16* out, const float* in, std::size_t n, cudaStream_t stream);
void bf16_to_float(float* out, const bf16* in, std::size_t n, cudaStream_t stream);

}  // namespace btm::cuda

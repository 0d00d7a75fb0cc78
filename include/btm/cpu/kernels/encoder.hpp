// encoder.hpp: the token and position embeddings, forward and backward (kernels/encoder.cpp).
#pragma once

#include <cstdint>

namespace btm::cpu {

// out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]
void encoder_forward(float* out, const std::int32_t* inp, const float* wte, const float* wpe, int B,
                     int T, int C);
void encoder_backward(float* dwte, float* dwpe, const float* dout, const std::int32_t* inp, int B,
                      int T, int C);

}  // namespace btm::cpu

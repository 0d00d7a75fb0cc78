// matmul.hpp: the linear layer, forward and backward, on OpenBLAS sgemm (kernels/matmul.cpp).
#pragma once

namespace btm::cpu {

// out[N, OC] = inp[N, IC] @ w[OC, IC]^T + bias[OC] (bias may be null).
void matmul_forward(float* out, const float* inp, const float* w, const float* bias, int N, int IC,
                    int OC);
// dinp = dout @ w; dw += dout^T @ inp; dbias += column sums of dout (dbias may be null).
void matmul_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                     const float* w, int N, int IC, int OC);

}  // namespace btm::cpu

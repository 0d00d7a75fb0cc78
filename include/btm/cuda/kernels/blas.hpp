// blas.hpp: the cuBLASLt GEMM context (kernels/blas.cpp): the linear layers' forward and
// backward GEMMs, with the bias, residual and GELU epilogues.
#pragma once

#include <cublasLt.h>

#include <array>
#include <cstddef>
#include <map>

#include "btm/cuda/kernels/bf16.hpp"

namespace btm::cuda {

// Owns a cuBLASLt handle and workspace; caches the heuristic's algorithm per GEMM shape.
class Blas {
 public:
  explicit Blas(std::size_t workspace_bytes = 64u << 20);
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;

  // Column-major D[m, n] = alpha * op(A) @ op(B) + beta * D (+ bias[m] broadcast over columns),
  // A and B bf16, D bf16 or fp32 (d_is_float), fp32 accumulation; `batch` strided batches.
  struct Gemm {
    bool trans_a = false, trans_b = false;
    int m = 0, n = 0, k = 0;
    const bf16* a = nullptr;
    int lda = 0;
    long long stride_a = 0;
    const bf16* b = nullptr;
    int ldb = 0;
    long long stride_b = 0;
    void* d = nullptr;
    bool d_is_float = false;
    int ldd = 0;
    long long stride_d = 0;
    int batch = 1;
    float alpha = 1, beta = 0;
    // C of D = alpha op(A) op(B) + beta C: same type and layout as D; null means D itself.
    const void* c = nullptr;
    const bf16* bias = nullptr;  // bf16, only with a bf16 D
    // The GELU epilogues (tanh approximation), bf16 D and batch 1 only. Forward: D = gelu(X)
    // with X = op(A) @ op(B) (+ bias) also written to gelu_aux unless gelu_aux is null (an
    // inference forward keeps no pre-GELU values). Backward: D = X * gelu'(aux), no bias.
    // gelu_aux is [m, n] column-major with leading dimension gelu_aux_ld.
    enum class Gelu { None, Forward, Backward };
    Gelu gelu = Gelu::None;
    bf16* gelu_aux = nullptr;  // read only in the backward
    int gelu_aux_ld = 0;
  };
  void gemm(const Gemm& g, cudaStream_t stream);

  // Whether the GELU epilogues accept an aux (pre-GELU) matrix at `aux` with `rows` rows per
  // column (the leading dimension): cuBLASLt needs it a multiple of 8 (cublasLt.h,
  // EPILOGUE_AUX_LD); the 16-byte alignment is ours, as for the bias. Callers that get false run
  // linear_forward + gelu_forward (and gelu_backward) instead.
  static bool gelu_epilogue_supported(const bf16* aux, int rows);

  // out[N, OC] = inp[N, IC] @ w[OC, IC]^T (+ bias), bf16 out.
  void linear_forward(bf16* out, const bf16* inp, const bf16* w, const bf16* bias, int N, int IC,
                      int OC, cudaStream_t stream);
  // out[N, OC] = residual[N, OC] + inp @ w^T + bias, in one GEMM (the residual is its C
  // matrix, summed in fp32 and rounded to bf16 once).
  void linear_residual_forward(bf16* out, const bf16* residual, const bf16* inp, const bf16* w,
                               const bf16* bias, int N, int IC, int OC, cudaStream_t stream);
  // Same as linear_forward with an fp32 out (the evaluation logits).
  void linear_forward_float(float* out, const bf16* inp, const bf16* w, int N, int IC, int OC,
                            cudaStream_t stream);
  // out[N, OC] = gelu(pre), pre[N, OC] = inp @ w^T + bias, in one GEMM (the bias is required).
  // Needs gelu_epilogue_supported(pre, OC), or pre null: pre is then not written (inference).
  void linear_gelu_forward(bf16* out, bf16* pre, const bf16* inp, const bf16* w, const bf16* bias,
                           int N, int IC, int OC, cudaStream_t stream);
  // dinp[N, IC] = dout[N, OC] @ w[OC, IC].
  void linear_backward_input(bf16* dinp, const bf16* dout, const bf16* w, int N, int IC, int OC,
                             cudaStream_t stream);
  // dpre[N, IC] = (dout[N, OC] @ w[OC, IC]) * gelu'(pre[N, IC]): the input gradient through the
  // linear layer and the GELU before it, in one GEMM. Needs gelu_epilogue_supported(pre, IC).
  void linear_backward_input_dgelu(bf16* dpre, const bf16* dout, const bf16* w, const bf16* pre,
                                   int N, int IC, int OC, cudaStream_t stream);
  // dw[OC, IC] += dout^T @ inp (fp32).
  void linear_backward_weight(float* dw, const bf16* dout, const bf16* inp, int N, int IC, int OC,
                              cudaStream_t stream);

 private:
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  std::size_t workspace_bytes_ = 0;
  std::map<std::array<long long, 21>, cublasLtMatmulAlgo_t> algos_;
};

}  // namespace btm::cuda

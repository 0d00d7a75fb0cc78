// matmul.cpp: the fp32 reference linear layer (cpu/kernels/matmul.hpp) on OpenBLAS sgemm, called
// on blocks of a fixed shape (64 rows or output channels) with OpenBLAS on one thread inside
// the OpenMP loops (OpenBLAS's own threads next to spinning OpenMP threads made 2 cores slower
// than 1), so each sgemm call, and its rounding, is the same for any number of threads.
#include <cblas.h>
#include <cstddef>

#include "btm/cpu/kernels/matmul.hpp"
#include "common.hpp"

namespace btm::cpu {

void matmul_forward(float* out, const float* inp, const float* w, const float* bias, int N, int IC,
                    int OC) {
  const size_t OCs = static_cast<size_t>(OC), ICs = static_cast<size_t>(IC);
  const size_t blocks = block_count(static_cast<size_t>(N));
  SingleThreadedBlas blas_guard;
  // out[rows] = inp[rows] @ w^T (+ bias), one block of rows per iteration.
#pragma omp parallel for schedule(static)
  for (size_t k = 0; k < blocks; ++k) {
    const Range rows = block(k, static_cast<size_t>(N));
    if (bias != nullptr)
      for (size_t n = rows.begin; n < rows.end; ++n) std::copy(bias, bias + OCs, out + n * OCs);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows.end - rows.begin),
                OC, IC, 1.0f, inp + rows.begin * ICs, IC, w, IC, bias != nullptr ? 1.0f : 0.0f,
                out + rows.begin * OCs, OC);
  }
}

void matmul_backward(float* dinp, float* dw, float* dbias, const float* dout, const float* inp,
                     const float* w, int N, int IC, int OC) {
  const size_t OCs = static_cast<size_t>(OC), ICs = static_cast<size_t>(IC);
  const size_t row_blocks = block_count(static_cast<size_t>(N)), out_blocks = block_count(OCs);
  SingleThreadedBlas blas_guard;
#pragma omp parallel
  {
    // dinp = dout @ w (overwritten), by blocks of rows of dinp.
    if (dinp != nullptr) {
#pragma omp for schedule(static) nowait
      for (size_t k = 0; k < row_blocks; ++k) {
        const Range rows = block(k, static_cast<size_t>(N));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans,
                    static_cast<int>(rows.end - rows.begin), IC, OC, 1.0f, dout + rows.begin * OCs,
                    OC, w, IC, 0.0f, dinp + rows.begin * ICs, IC);
      }
    }
    // dw += dout^T @ inp and dbias += column sums of dout, by blocks of output channels: each
    // element is summed over all N rows within one iteration.
#pragma omp for schedule(static)
    for (size_t k = 0; k < out_blocks; ++k) {
      const Range outs = block(k, OCs);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(outs.end - outs.begin),
                  IC, N, 1.0f, dout + outs.begin, OC, inp, IC, 1.0f, dw + outs.begin * ICs, IC);
      if (dbias == nullptr) continue;
      double sum[kBlock] = {};
      for (int n = 0; n < N; ++n) {
        const float* d = dout + static_cast<size_t>(n) * OCs;
        for (size_t o = outs.begin; o < outs.end; ++o) sum[o - outs.begin] += d[o];
      }
      for (size_t o = outs.begin; o < outs.end; ++o)
        dbias[o] += static_cast<float>(sum[o - outs.begin]);
    }
  }
}

}  // namespace btm::cpu

// attention.cpp: the fp32 reference causal self-attention (cpu/kernels/attention.hpp): one
// (batch, head) pair per iteration, the score products on OpenBLAS sgemm on one thread, the
// softmax sums in double.
#include <cblas.h>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "btm/cpu/kernels/attention.hpp"
#include "common.hpp"

namespace btm::cpu {

void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const size_t Ts = static_cast<size_t>(T), Cs = static_cast<size_t>(C);
  const int ld_qkv = 3 * C;
  SingleThreadedBlas blas_guard;
#pragma omp parallel for schedule(static)
  for (int bh = 0; bh < B * NH; ++bh) {
    const size_t b = static_cast<size_t>(bh / NH), h = static_cast<size_t>(bh % NH);
    const float* q = qkv + b * Ts * 3 * Cs + h * static_cast<size_t>(hs);
    const float* k = q + Cs;
    const float* v = q + 2 * Cs;
    float* a = att + static_cast<size_t>(bh) * Ts * Ts;
    // Scores for every (t, j); the causal softmax below keeps j <= t.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, ld_qkv, k, ld_qkv,
                0.0f, a, T);
    for (size_t t = 0; t < Ts; ++t) {
      float* row = a + t * Ts;
      const float max = *std::max_element(row, row + t + 1);
      double sum = 0;
      for (size_t j = 0; j <= t; ++j) {
        row[j] = std::exp(row[j] - max);
        sum += row[j];
      }
      const float inv = static_cast<float>(1.0 / sum);
      for (size_t j = 0; j <= t; ++j) row[j] *= inv;
      std::fill(row + t + 1, row + Ts, 0.0f);
    }
    // out = att @ v (the zeros above the diagonal make this causal).
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, a, T, v, ld_qkv, 0.0f,
                out + b * Ts * Cs + h * static_cast<size_t>(hs), C);
  }
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int B,
                        int T, int C, int NH) {
  const int hs = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const size_t Ts = static_cast<size_t>(T), Cs = static_cast<size_t>(C);
  const int ld_qkv = 3 * C;
  SingleThreadedBlas blas_guard;
#pragma omp parallel
  {
    std::vector<float> dscores(Ts * Ts);  // d(loss)/d(scores) of one (batch, head)
#pragma omp for schedule(static)
    for (int bh = 0; bh < B * NH; ++bh) {
      const size_t b = static_cast<size_t>(bh / NH), h = static_cast<size_t>(bh % NH);
      const size_t head_offset = b * Ts * 3 * Cs + h * static_cast<size_t>(hs);
      const float* q = qkv + head_offset;
      const float* k = q + Cs;
      const float* v = q + 2 * Cs;
      float* dq = dqkv + head_offset;
      float* dk = dq + Cs;
      float* dv = dq + 2 * Cs;
      const float* a = att + static_cast<size_t>(bh) * Ts * Ts;
      const float* dy = dout + b * Ts * Cs + h * static_cast<size_t>(hs);
      float* ds = dscores.data();
      // d(att) = dy @ v^T; dv = att^T @ dy.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1.0f, dy, C, v, ld_qkv, 0.0f,
                  ds, T);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, a, T, dy, C, 0.0f, dv,
                  ld_qkv);
      // Softmax backward: dS = att * (d(att) - sum_j att * d(att)), times the score scale.
      for (size_t t = 0; t < Ts; ++t) {
        const float* p = a + t * Ts;
        float* row = ds + t * Ts;
        double dot = 0;
        for (size_t j = 0; j <= t; ++j) dot += static_cast<double>(p[j]) * row[j];
        const float d = static_cast<float>(dot);
        for (size_t j = 0; j <= t; ++j) row[j] = p[j] * (row[j] - d) * scale;
        std::fill(row + t + 1, row + Ts, 0.0f);
      }
      // dq = dS @ k; dk = dS^T @ q.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, ds, T, k, ld_qkv, 0.0f,
                  dq, ld_qkv);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, ds, T, q, ld_qkv, 0.0f,
                  dk, ld_qkv);
    }
  }
}

}  // namespace btm::cpu

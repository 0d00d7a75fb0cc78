// layernorm.cpp: the fp32 reference LayerNorm (cpu/kernels/layernorm.hpp), one row per
// iteration; the weight and bias gradients summed in double per channel, in row order.
#include <cmath>
#include <cstddef>
#include <vector>

#include "btm/cpu/kernels/layernorm.hpp"
#include "common.hpp"

namespace btm::cpu {

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w,
                       const float* b, int N, int C) {
  const size_t Cs = static_cast<size_t>(C);
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const float* x = inp + static_cast<size_t>(n) * Cs;
    double sum = 0;
    for (size_t c = 0; c < Cs; ++c) sum += x[c];
    const double mu = sum / C;
    double sq = 0;
    for (size_t c = 0; c < Cs; ++c) sq += (x[c] - mu) * (x[c] - mu);
    const float m = static_cast<float>(mu);
    const float s = static_cast<float>(1.0 / std::sqrt(sq / C + kLayerNormEps));
    float* o = out + static_cast<size_t>(n) * Cs;
    for (size_t c = 0; c < Cs; ++c) o[c] = (x[c] - m) * s * w[c] + b[c];
    mean[n] = m;
    rstd[n] = s;
  }
}

void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                        const float* w, const float* mean, const float* rstd, int N, int C) {
  const size_t Cs = static_cast<size_t>(C);
  // dinp = rstd * (dy*w - mean(dy*w) - xhat * mean(dy*w*xhat)), one row per iteration.
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    const size_t row = static_cast<size_t>(n) * Cs;
    const float* x = inp + row;
    const float* dy = dout + row;
    double dnorm_mean = 0, dnorm_xhat_mean = 0;
    for (size_t c = 0; c < Cs; ++c) {
      const float xhat = (x[c] - mean[n]) * rstd[n];
      const float dnorm = dy[c] * w[c];
      dnorm_mean += dnorm;
      dnorm_xhat_mean += dnorm * xhat;
    }
    const float a = static_cast<float>(dnorm_mean / C);
    const float bterm = static_cast<float>(dnorm_xhat_mean / C);
    float* dx = dinp + row;
    for (size_t c = 0; c < Cs; ++c) {
      const float xhat = (x[c] - mean[n]) * rstd[n];
      dx[c] = (dy[c] * w[c] - a - xhat * bterm) * rstd[n];
    }
  }
  // dw, db: sums over rows, split by channel.
#pragma omp parallel
  {
    const Range share = thread_share(Cs);
    std::vector<double> sum_w(share.end - share.begin, 0.0), sum_b(share.end - share.begin, 0.0);
    for (int n = 0; n < N; ++n) {
      const size_t row = static_cast<size_t>(n) * Cs;
      for (size_t c = share.begin; c < share.end; ++c) {
        const float xhat = (inp[row + c] - mean[n]) * rstd[n];
        sum_w[c - share.begin] += dout[row + c] * xhat;
        sum_b[c - share.begin] += dout[row + c];
      }
    }
    for (size_t c = share.begin; c < share.end; ++c) {
      dw[c] += static_cast<float>(sum_w[c - share.begin]);
      db[c] += static_cast<float>(sum_b[c - share.begin]);
    }
  }
}

}  // namespace btm::cpu

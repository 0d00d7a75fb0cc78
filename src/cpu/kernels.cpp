// kernels.cpp: the fp32 CPU reference kernels declared in cpu/kernels.hpp.
// Matmuls (and the attention score products) go through OpenBLAS sgemm; every other loop is an
// OpenMP loop with a static schedule. Work is cut by partitions that do not depend on the thread
// count (rows, output channels, (batch, head) pairs, fixed-size chunks), each reduction is summed
// in a fixed order, and sgemm is called on blocks of a fixed shape with OpenBLAS on one thread
// inside the OpenMP loops (OpenBLAS's own threads next to spinning OpenMP threads made 2 cores
// slower than 1). So every kernel gives the same bytes for any number of OpenMP threads.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "btm/cpu/kernels.hpp"

namespace btm::cpu {
namespace {

using std::size_t;

// The contiguous share [begin, end) of [0, n) of the calling thread of an OpenMP team.
struct Range {
  size_t begin, end;
};
Range thread_share(size_t n) {
  const size_t threads = static_cast<size_t>(omp_get_num_threads());
  const size_t id = static_cast<size_t>(omp_get_thread_num());
  return {n * id / threads, n * (id + 1) / threads};
}

// Matmuls are cut into blocks of this many rows (or output channels) whatever the thread count,
// so each sgemm call, and therefore its rounding, is the same for 1 or 16 threads.
constexpr size_t kBlock = 64;
size_t block_count(size_t n) {
  return (n + kBlock - 1) / kBlock;
}
Range block(size_t k, size_t n) {
  return {k * kBlock, std::min(n, (k + 1) * kBlock)};
}

// Runs OpenBLAS single-threaded while alive: the kernels call sgemm from inside OpenMP loops,
// where OpenBLAS's own threads would only oversubscribe the cores.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas() : saved_(openblas_get_num_threads()) { openblas_set_num_threads(1); }
  ~SingleThreadedBlas() { openblas_set_num_threads(saved_); }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int saved_;
};

constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluCubic = 0.044715f;

// tanh(u) through one expf: several times faster than glibc's tanhf, which took a quarter of the
// CPU training step; the absolute error is below 2e-7 (measured over [-20, 20]).
inline float tanh_by_exp(float u) {
  return 1.0f - 2.0f / (1.0f + std::exp(2.0f * u));
}

// The argument of tanh in GPT-2's GELU.
inline float gelu_tanh_arg(float x) {
  return kGeluScale * (x + kGeluCubic * x * x * x);
}

}  // namespace

void encoder_forward(float* out, const std::int32_t* inp, const float* wte, const float* wpe, int B,
                     int T, int C) {
  const size_t BT = static_cast<size_t>(B) * T, Cs = static_cast<size_t>(C);
#pragma omp parallel for schedule(static)
  for (size_t bt = 0; bt < BT; ++bt) {
    const float* token = wte + static_cast<size_t>(inp[bt]) * Cs;
    const float* position = wpe + (bt % static_cast<size_t>(T)) * Cs;
    float* o = out + bt * Cs;
    for (size_t c = 0; c < Cs; ++c) o[c] = token[c] + position[c];
  }
}

void encoder_backward(float* dwte, float* dwpe, const float* dout, const std::int32_t* inp, int B,
                      int T, int C) {
  const size_t BT = static_cast<size_t>(B) * T, Cs = static_cast<size_t>(C);
  // Several positions may share a token: split by channel so that each gradient element is
  // summed by one thread, in token order.
#pragma omp parallel
  {
    const Range share = thread_share(Cs);
    for (size_t bt = 0; bt < BT; ++bt) {
      const float* d = dout + bt * Cs;
      float* token = dwte + static_cast<size_t>(inp[bt]) * Cs;
      float* position = dwpe + (bt % static_cast<size_t>(T)) * Cs;
      for (size_t c = share.begin; c < share.end; ++c) {
        token[c] += d[c];
        position[c] += d[c];
      }
    }
  }
}

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

void gelu_forward(float* out, const float* inp, std::size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const float x = inp[i];
    out[i] = 0.5f * x * (1.0f + tanh_by_exp(gelu_tanh_arg(x)));
  }
}

// Elementwise, so dinp may alias dout.
void gelu_backward(float* dinp, const float* inp, const float* dout, std::size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const float x = inp[i];
    const float th = tanh_by_exp(gelu_tanh_arg(x));
    const float sech2 = 1.0f - th * th;
    const float local =
        0.5f * (1.0f + th) + 0.5f * x * sech2 * kGeluScale * (1.0f + 3.0f * kGeluCubic * x * x);
    dinp[i] = local * dout[i];
  }
}

void residual_forward(float* out, const float* a, const float* b, std::size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                   const std::int32_t* targets, int N, int V, int Vp, float dloss) {
  const size_t Vs = static_cast<size_t>(V), Vps = static_cast<size_t>(Vp);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; ++i) {
    const float* row = logits + static_cast<size_t>(i) * Vps;
    float* drow = dlogits != nullptr ? dlogits + static_cast<size_t>(i) * Vps : nullptr;
    const float max = *std::max_element(row, row + Vs);
    const size_t target = static_cast<size_t>(targets[i]);
    // Read before dlogits (which may alias the row) is written.
    const float target_logit = row[target];
    double sum = 0;
    if (drow == nullptr) {
      for (size_t j = 0; j < Vs; ++j) sum += std::exp(row[j] - max);
    } else {
      for (size_t j = 0; j < Vs; ++j) {
        const float e = std::exp(row[j] - max);
        sum += e;
        drow[j] = e;  // kept for the gradient below: one exp per logit
      }
    }
    losses[i] = static_cast<float>(std::log(sum) - (target_logit - max));
    if (drow == nullptr) continue;
    const float inv_sum = static_cast<float>(1.0 / sum);
    for (size_t j = 0; j < Vs; ++j)
      drow[j] = (drow[j] * inv_sum - (j == target ? 1.0f : 0.0f)) * dloss;
    std::fill(drow + Vs, drow + Vps, 0.0f);
  }
}

double sum_of_squares(const float* g, std::size_t n) {
  // Fixed-size chunks summed in chunk order: the same result for any thread count.
  constexpr size_t kChunk = 1 << 15;
  const size_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(chunks, 0.0);
#pragma omp parallel for schedule(static)
  for (size_t k = 0; k < chunks; ++k) {
    double s = 0;
    const size_t end = std::min(n, (k + 1) * kChunk);
    for (size_t i = k * kChunk; i < end; ++i) s += static_cast<double>(g[i]) * g[i];
    partial[k] = s;
  }
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

void adamw_update(float* p, const float* g, float* m, float* v, std::size_t n, float lr,
                  float beta1, float beta2, float eps, float weight_decay, float bias1, float bias2,
                  float grad_scale) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; ++i) {
    const float grad = g[i] * grad_scale;
    m[i] = beta1 * m[i] + (1.0f - beta1) * grad;
    v[i] = beta2 * v[i] + (1.0f - beta2) * grad * grad;
    const float m_hat = m[i] / bias1;
    const float v_hat = v[i] / bias2;
    // Decoupled decay uses the parameter before this step, as PyTorch's p.mul_(1 - lr * wd).
    p[i] -= lr * (m_hat / (std::sqrt(v_hat) + eps) + weight_decay * p[i]);
  }
}

}  // namespace btm::cpu

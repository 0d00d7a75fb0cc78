// Tests of the fp32 CPU reference kernels (cpu/kernels.hpp): every forward against a small
// double-precision reference written here, every backward against central finite differences of
// that double reference, and the conventions (activation gradients overwritten, parameter
// gradients accumulated, results independent of the thread count).
//
// Tolerance. The finite differences are taken on the double-precision reference with h = 1e-5,
// so their own error (h^2 truncation, 1e-16 / h rounding) is below 1e-9 relative. What remains
// is the fp32 rounding of the kernel under test, about 1e-7 relative per operation. The check is
// max_i |analytic_i - fd_i| <= kGradTol * max_i |fd_i| with kGradTol = 1e-5: the errors measured
// (printed by the tests as "max normalised error") are 2e-8..1.5e-7, so the bound leaves a
// margin of 60x or more for other CPUs and BLAS kernels, while a wrong term of a gradient gives
// errors of order 1.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "btm/cpu/kernels.hpp"
#include "btm/util/rng.hpp"

namespace {

using btm::Rng;
using Vec = std::vector<float>;
using DVec = std::vector<double>;

constexpr double kGradTol = 1e-5;
constexpr double kForwardTol = 1e-5;  // fp32 forward against the double reference, normalised
constexpr double kStep = 1e-5;

Vec random_vec(std::size_t n, std::uint64_t seed, double scale = 1.0, double offset = 0.0) {
  Rng rng(seed);
  Vec v(n);
  for (float& x : v) x = static_cast<float>(offset + scale * rng.normal());
  return v;
}

DVec to_double(const Vec& v) {
  return DVec(v.begin(), v.end());
}

double max_abs(const DVec& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

// max_i |a_i - b_i| / max_i |b_i|
double normalised_error(const Vec& a, const DVec& b) {
  double err = 0;
  for (std::size_t i = 0; i < b.size(); ++i) err = std::max(err, std::abs(a[i] - b[i]));
  return err / std::max(max_abs(b), 1e-30);
}

// The analytic gradient of the fp32 kernel against central differences of the double loss.
void expect_gradient(const std::string& what, const Vec& x, const Vec& analytic,
                     const std::function<double(const DVec&)>& loss) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  DVec xd = to_double(x), fd(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double saved = xd[i];
    xd[i] = saved + kStep;
    const double up = loss(xd);
    xd[i] = saved - kStep;
    const double down = loss(xd);
    xd[i] = saved;
    fd[i] = (up - down) / (2 * kStep);
  }
  ASSERT_GT(max_abs(fd), 1e-6) << what << ": the test has a vanishing gradient";
  const double err = normalised_error(analytic, fd);
  std::printf("  %-28s max normalised error %.2e\n", what.c_str(), err);
  EXPECT_LT(err, kGradTol) << what;
}

void expect_forward(const std::string& what, const Vec& out, const DVec& ref) {
  ASSERT_EQ(out.size(), ref.size());
  EXPECT_LT(normalised_error(out, ref), kForwardTol) << what;
}

double dot(const DVec& a, const Vec& w) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * w[i];
  return s;
}

// ---------------------------------------------------------------------------------------------
// Double-precision references
// ---------------------------------------------------------------------------------------------

DVec ref_encoder(const std::vector<std::int32_t>& inp, const DVec& wte, const DVec& wpe, int B,
                 int T, int C) {
  DVec out(static_cast<std::size_t>(B) * T * C);
  for (int bt = 0; bt < B * T; ++bt)
    for (int c = 0; c < C; ++c) out[bt * C + c] = wte[inp[bt] * C + c] + wpe[(bt % T) * C + c];
  return out;
}

DVec ref_layernorm(const DVec& x, const DVec& w, const DVec& b, int N, int C) {
  DVec out(x.size());
  for (int n = 0; n < N; ++n) {
    double mean = 0, var = 0;
    for (int c = 0; c < C; ++c) mean += x[n * C + c] / C;
    for (int c = 0; c < C; ++c) var += (x[n * C + c] - mean) * (x[n * C + c] - mean) / C;
    const double rstd = 1.0 / std::sqrt(var + btm::cpu::kLayerNormEps);
    for (int c = 0; c < C; ++c) out[n * C + c] = (x[n * C + c] - mean) * rstd * w[c] + b[c];
  }
  return out;
}

DVec ref_matmul(const DVec& x, const DVec& w, const DVec* bias, int N, int IC, int OC) {
  DVec out(static_cast<std::size_t>(N) * OC);
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      double s = bias ? (*bias)[o] : 0.0;
      for (int i = 0; i < IC; ++i) s += x[n * IC + i] * w[o * IC + i];
      out[n * OC + o] = s;
    }
  return out;
}

DVec ref_attention(const DVec& qkv, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hs));
  DVec out(static_cast<std::size_t>(B) * T * C, 0.0);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        const double* q = &qkv[(b * T + t) * 3 * C + h * hs];
        DVec p(t + 1);
        double max = -1e300, sum = 0;
        for (int j = 0; j <= t; ++j) {
          const double* k = &qkv[(b * T + j) * 3 * C + C + h * hs];
          double s = 0;
          for (int i = 0; i < hs; ++i) s += q[i] * k[i];
          p[j] = s * scale;
          max = std::max(max, p[j]);
        }
        for (int j = 0; j <= t; ++j) sum += (p[j] = std::exp(p[j] - max));
        for (int j = 0; j <= t; ++j) {
          const double* v = &qkv[(b * T + j) * 3 * C + 2 * C + h * hs];
          for (int i = 0; i < hs; ++i) out[(b * T + t) * C + h * hs + i] += p[j] / sum * v[i];
        }
      }
  return out;
}

DVec ref_gelu(const DVec& x) {
  DVec out(x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    out[i] =
        0.5 * x[i] * (1 + std::tanh(std::sqrt(2 / M_PI) * (x[i] + 0.044715 * x[i] * x[i] * x[i])));
  return out;
}

DVec ref_crossentropy(const DVec& logits, const std::vector<std::int32_t>& targets, int N, int V,
                      int Vp) {
  DVec losses(static_cast<std::size_t>(N));
  for (int n = 0; n < N; ++n) {
    const double* row = &logits[n * Vp];
    double max = *std::max_element(row, row + V), sum = 0;
    for (int j = 0; j < V; ++j) sum += std::exp(row[j] - max);
    losses[n] = std::log(sum) + max - row[targets[n]];
  }
  return losses;
}

// Runs f with `threads` OpenMP threads, then restores the previous setting.
template <typename F>
void with_threads(int threads, F&& f) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  f();
  omp_set_num_threads(saved);
}

// ---------------------------------------------------------------------------------------------

TEST(CpuKernels, EncoderForwardAndBackward) {
  const int B = 2, T = 4, C = 8, V = 5;
  // Token 3 appears three times: its wte row must receive the sum of three gradients.
  const std::vector<std::int32_t> inp = {3, 1, 3, 0, 4, 3, 2, 1};
  const Vec wte = random_vec(V * C, 1), wpe = random_vec(T * C, 2), w = random_vec(B * T * C, 3);
  Vec out(B * T * C);
  btm::cpu::encoder_forward(out.data(), inp.data(), wte.data(), wpe.data(), B, T, C);
  expect_forward("encoder", out, ref_encoder(inp, to_double(wte), to_double(wpe), B, T, C));

  Vec dwte(wte.size(), 0.0f), dwpe(wpe.size(), 0.0f);
  btm::cpu::encoder_backward(dwte.data(), dwpe.data(), w.data(), inp.data(), B, T, C);
  expect_gradient("encoder dwte", wte, dwte, [&](const DVec& x) {
    return dot(ref_encoder(inp, x, to_double(wpe), B, T, C), w);
  });
  expect_gradient("encoder dwpe", wpe, dwpe, [&](const DVec& x) {
    return dot(ref_encoder(inp, to_double(wte), x, B, T, C), w);
  });

  // Both are parameter gradients: a second call adds the same again (term by term, so a
  // repeated token's row is 2x only up to rounding).
  Vec dwte2 = dwte, dwpe2 = dwpe;
  btm::cpu::encoder_backward(dwte2.data(), dwpe2.data(), w.data(), inp.data(), B, T, C);
  for (std::size_t i = 0; i < dwte.size(); ++i)
    ASSERT_NEAR(dwte2[i], 2 * dwte[i], 1e-6 * std::abs(dwte[i]));
  for (std::size_t i = 0; i < dwpe.size(); ++i)
    ASSERT_NEAR(dwpe2[i], 2 * dwpe[i], 1e-6 * std::abs(dwpe[i]));
}

TEST(CpuKernels, LayerNormForwardAndBackward) {
  const int N = 6, C = 16;
  const Vec x = random_vec(N * C, 4, 2.0, 0.7), w = random_vec(C, 5, 0.5, 1.0),
            b = random_vec(C, 6, 0.3), dout = random_vec(N * C, 7);
  Vec out(N * C), mean(N), rstd(N);
  btm::cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N,
                              C);
  const DVec xd = to_double(x), wd = to_double(w), bd = to_double(b);
  expect_forward("layernorm", out, ref_layernorm(xd, wd, bd, N, C));

  Vec dx(N * C, 123.0f), dw(C, 0.0f), db(C, 0.0f);
  btm::cpu::layernorm_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(),
                               mean.data(), rstd.data(), N, C);
  expect_gradient("layernorm dinp", x, dx,
                  [&](const DVec& v) { return dot(ref_layernorm(v, wd, bd, N, C), dout); });
  expect_gradient("layernorm dw", w, dw,
                  [&](const DVec& v) { return dot(ref_layernorm(xd, v, bd, N, C), dout); });
  expect_gradient("layernorm db", b, db,
                  [&](const DVec& v) { return dot(ref_layernorm(xd, wd, v, N, C), dout); });

  // Overwrite dinp (whatever it held), accumulate dw and db.
  Vec dx2(N * C, -7.0f), dw2 = dw, db2 = db;
  btm::cpu::layernorm_backward(dx2.data(), dw2.data(), db2.data(), dout.data(), x.data(), w.data(),
                               mean.data(), rstd.data(), N, C);
  EXPECT_EQ(dx2, dx);
  for (int c = 0; c < C; ++c) {
    ASSERT_EQ(dw2[c], 2 * dw[c]);
    ASSERT_EQ(db2[c], 2 * db[c]);
  }
}

void check_matmul(bool with_bias) {
  const int N = 5, IC = 7, OC = 6;
  const std::string tag = with_bias ? "matmul+bias " : "matmul ";
  const Vec x = random_vec(N * IC, 8), w = random_vec(OC * IC, 9), bias = random_vec(OC, 10),
            dout = random_vec(N * OC, 11);
  const DVec xd = to_double(x), wd = to_double(w), bd = to_double(bias);
  const DVec* bias_ref = with_bias ? &bd : nullptr;
  Vec out(N * OC, 55.0f);  // stale contents must not leak into the result
  btm::cpu::matmul_forward(out.data(), x.data(), w.data(), with_bias ? bias.data() : nullptr, N, IC,
                           OC);
  expect_forward(tag, out, ref_matmul(xd, wd, bias_ref, N, IC, OC));

  Vec dx(N * IC, 9.0f), dw(OC * IC, 0.0f), db(OC, 0.0f);
  float* dbias = with_bias ? db.data() : nullptr;
  btm::cpu::matmul_backward(dx.data(), dw.data(), dbias, dout.data(), x.data(), w.data(), N, IC,
                            OC);
  expect_gradient(tag + "dinp", x, dx,
                  [&](const DVec& v) { return dot(ref_matmul(v, wd, bias_ref, N, IC, OC), dout); });
  expect_gradient(tag + "dw", w, dw,
                  [&](const DVec& v) { return dot(ref_matmul(xd, v, bias_ref, N, IC, OC), dout); });
  if (with_bias)
    expect_gradient(tag + "dbias", bias, db,
                    [&](const DVec& v) { return dot(ref_matmul(xd, wd, &v, N, IC, OC), dout); });

  Vec dx2(N * IC, -1.0f), dw2 = dw, db2 = db;
  btm::cpu::matmul_backward(dx2.data(), dw2.data(), with_bias ? db2.data() : nullptr, dout.data(),
                            x.data(), w.data(), N, IC, OC);
  EXPECT_EQ(dx2, dx);
  for (std::size_t i = 0; i < dw.size(); ++i) ASSERT_EQ(dw2[i], 2 * dw[i]);
  for (int o = 0; o < OC; ++o) ASSERT_EQ(db2[o], 2 * db[o]);
}

TEST(CpuKernels, MatmulWithBiasForwardAndBackward) {
  check_matmul(true);
}
TEST(CpuKernels, MatmulWithoutBiasForwardAndBackward) {
  check_matmul(false);
}

TEST(CpuKernels, AttentionForwardAndBackward) {
  const int B = 2, T = 5, C = 8, NH = 2;
  const Vec qkv = random_vec(B * T * 3 * C, 12), dout = random_vec(B * T * C, 13);
  Vec out(B * T * C), att(B * NH * T * T, 77.0f);
  btm::cpu::attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
  expect_forward("attention", out, ref_attention(to_double(qkv), B, T, C, NH));
  // Saved probabilities: causal rows that sum to one.
  for (int row = 0; row < B * NH * T; ++row) {
    const int t = row % T;
    double sum = 0;
    for (int j = 0; j < T; ++j) {
      const float p = att[row * T + j];
      if (j > t) {
        ASSERT_EQ(p, 0.0f);
      }
      sum += p;
    }
    ASSERT_NEAR(sum, 1.0, 1e-6);
  }

  Vec dqkv(qkv.size(), 31.0f);
  btm::cpu::attention_backward(dqkv.data(), dout.data(), qkv.data(), att.data(), B, T, C, NH);
  expect_gradient("attention dqkv", qkv, dqkv,
                  [&](const DVec& v) { return dot(ref_attention(v, B, T, C, NH), dout); });

  Vec dqkv2(qkv.size(), -2.0f);
  btm::cpu::attention_backward(dqkv2.data(), dout.data(), qkv.data(), att.data(), B, T, C, NH);
  EXPECT_EQ(dqkv2, dqkv);
}

TEST(CpuKernels, GeluForwardAndBackward) {
  const std::size_t n = 64;
  const Vec x = random_vec(n, 14, 2.0), dout = random_vec(n, 15);
  Vec out(n);
  btm::cpu::gelu_forward(out.data(), x.data(), n);
  expect_forward("gelu", out, ref_gelu(to_double(x)));

  Vec dx(n, 8.0f);
  btm::cpu::gelu_backward(dx.data(), x.data(), dout.data(), n);
  expect_gradient("gelu dinp", x, dx, [&](const DVec& v) { return dot(ref_gelu(v), dout); });
  // In place (dinp aliasing dout) gives the same.
  Vec inplace = dout;
  btm::cpu::gelu_backward(inplace.data(), x.data(), inplace.data(), n);
  EXPECT_EQ(inplace, dx);
}

TEST(CpuKernels, CrossEntropyIgnoresPaddedVocabulary) {
  const int N = 4, V = 7, Vp = 16;
  const float dloss = 0.37f;
  const std::vector<std::int32_t> targets = {0, 6, 3, 3};
  Vec logits = random_vec(N * Vp, 16, 2.0);
  // Huge padded logits would dominate the softmax if they were included.
  for (int n = 0; n < N; ++n)
    for (int j = V; j < Vp; ++j) logits[n * Vp + j] = 50.0f + j;
  Vec losses(N), dlogits(N * Vp, 3.0f);
  btm::cpu::crossentropy_forward_backward(losses.data(), dlogits.data(), logits.data(),
                                          targets.data(), N, V, Vp, dloss);
  expect_forward("crossentropy", losses, ref_crossentropy(to_double(logits), targets, N, V, Vp));
  for (int n = 0; n < N; ++n)
    for (int j = V; j < Vp; ++j) ASSERT_EQ(dlogits[n * Vp + j], 0.0f) << n << "," << j;
  // d(dloss * sum of losses) / d(logits)
  expect_gradient("crossentropy dlogits", logits, dlogits, [&](const DVec& v) {
    double s = 0;
    for (double l : ref_crossentropy(v, targets, N, V, Vp)) s += dloss * l;
    return s;
  });

  // dlogits may alias logits; without dlogits only the losses are written.
  Vec aliased = logits, losses2(N);
  btm::cpu::crossentropy_forward_backward(losses2.data(), aliased.data(), aliased.data(),
                                          targets.data(), N, V, Vp, dloss);
  EXPECT_EQ(aliased, dlogits);
  EXPECT_EQ(losses2, losses);
  Vec untouched = logits, losses3(N);
  btm::cpu::crossentropy_forward_backward(losses3.data(), nullptr, untouched.data(), targets.data(),
                                          N, V, Vp, dloss);
  EXPECT_EQ(untouched, logits);
  EXPECT_EQ(losses3, losses);
}

TEST(CpuKernels, ResidualAndSumOfSquares) {
  const std::size_t n = 100003;  // several reduction chunks and a partial one
  const Vec a = random_vec(n, 17), b = random_vec(n, 18);
  Vec out(n);
  btm::cpu::residual_forward(out.data(), a.data(), b.data(), n);
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], a[i] + b[i]);

  double expected = 0;
  for (float x : a) expected += static_cast<double>(x) * x;
  double one = 0, two = 0;
  with_threads(1, [&] { one = btm::cpu::sum_of_squares(a.data(), n); });
  with_threads(2, [&] { two = btm::cpu::sum_of_squares(a.data(), n); });
  EXPECT_NEAR(one, expected, 1e-10 * expected);
  EXPECT_EQ(one, two);
  EXPECT_EQ(btm::cpu::sum_of_squares(a.data(), 0), 0.0);
}

TEST(CpuKernels, AdamWMatchesTheFormulaOnThreeElements) {
  // Two steps of PyTorch's AdamW on 3 elements, with the gradient scaled by 0.5 (clipping).
  const float lr = 0.01f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, wd = 0.1f, scale = 0.5f;
  Vec p = {0.5f, -1.0f, 2.0f}, m(3, 0.0f), v(3, 0.0f);
  const Vec g1 = {0.1f, -0.2f, 0.0f}, g2 = {-0.3f, 0.4f, 1e-3f};
  DVec pe = {0.5, -1.0, 2.0}, me(3, 0.0), ve(3, 0.0);
  for (int t = 1; t <= 2; ++t) {
    const Vec& g = t == 1 ? g1 : g2;
    const double bias1 = 1 - std::pow(0.9, t), bias2 = 1 - std::pow(0.95, t);
    btm::cpu::adamw_update(p.data(), g.data(), m.data(), v.data(), 3, lr, beta1, beta2, eps, wd,
                           static_cast<float>(bias1), static_cast<float>(bias2), scale);
    for (int i = 0; i < 3; ++i) {
      const double gi = 0.5 * g[i];
      pe[i] *= 1 - 0.01 * 0.1;  // decoupled weight decay first, as torch.optim.AdamW
      me[i] = 0.9 * me[i] + 0.1 * gi;
      ve[i] = 0.95 * ve[i] + 0.05 * gi * gi;
      pe[i] -= 0.01 * (me[i] / bias1) / (std::sqrt(ve[i] / bias2) + 1e-8);
    }
    for (int i = 0; i < 3; ++i) {
      EXPECT_NEAR(p[i], pe[i], 1e-6) << "t=" << t << " i=" << i;
      EXPECT_NEAR(m[i], me[i], 1e-8) << "t=" << t << " i=" << i;
      EXPECT_NEAR(v[i], ve[i], 1e-9) << "t=" << t << " i=" << i;
    }
  }
}

TEST(CpuKernels, ResultsDoNotDependOnTheThreadCount) {
  const int B = 2, T = 80, C = 32, NH = 4, N = B * T, V = 50, Vp = 64;  // 3 row blocks
  std::vector<std::int32_t> tokens(N);
  for (int i = 0; i < N; ++i) tokens[i] = (i * 7) % V;
  const Vec x = random_vec(N * C, 19), w = random_vec(C, 20, 0.2, 1.0), b = random_vec(C, 21),
            dout = random_vec(N * C, 22), qkv = random_vec(N * 3 * C, 23),
            logits = random_vec(N * Vp, 24), wte = random_vec(V * C, 25),
            wpe = random_vec(T * C, 26), bias3 = random_vec(3 * C, 27);
  auto run = [&](int threads) {
    std::vector<Vec> r;
    with_threads(threads, [&] {
      Vec out(N * C), mean(N), rstd(N), dx(N * C), dw(C, 0.0f), db(C, 0.0f);
      btm::cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(),
                                  b.data(), N, C);
      btm::cpu::layernorm_backward(dx.data(), dw.data(), db.data(), dout.data(), x.data(), w.data(),
                                   mean.data(), rstd.data(), N, C);
      Vec aout(N * C), att(B * NH * T * T), dqkv(N * 3 * C);
      btm::cpu::attention_forward(aout.data(), att.data(), qkv.data(), B, T, C, NH);
      btm::cpu::attention_backward(dqkv.data(), dout.data(), qkv.data(), att.data(), B, T, C, NH);
      Vec losses(N), dlogits(N * Vp);
      btm::cpu::crossentropy_forward_backward(losses.data(), dlogits.data(), logits.data(),
                                              tokens.data(), N, V, Vp, 0.1f);
      Vec enc(N * C), dwte(V * C, 0.0f), dwpe(T * C, 0.0f);
      btm::cpu::encoder_forward(enc.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);
      btm::cpu::encoder_backward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), B, T, C);
      Vec mm(N * 3 * C), dmm_in(N * C), dmm_w(3 * C * C, 0.0f), dmm_b(3 * C, 0.0f);
      btm::cpu::matmul_forward(mm.data(), x.data(), qkv.data(), bias3.data(), N, C, 3 * C);
      btm::cpu::matmul_backward(dmm_in.data(), dmm_w.data(), dmm_b.data(), qkv.data(), x.data(),
                                qkv.data(), N, C, 3 * C);
      Vec g(N * C), dg(N * C);
      btm::cpu::gelu_forward(g.data(), x.data(), x.size());
      btm::cpu::gelu_backward(dg.data(), x.data(), dout.data(), x.size());
      r = {out,   dx,    dw,   db,  enc,  dwte,   dwpe,    mm, dmm_in,
           dmm_w, dmm_b, aout, att, dqkv, losses, dlogits, g,  dg};
    });
    return r;
  };
  const auto one = run(1), two = run(2);
  ASSERT_EQ(one.size(), two.size());
  for (std::size_t k = 0; k < one.size(); ++k) EXPECT_EQ(one[k], two[k]) << "output " << k;
}

}  // namespace

// Tests of the CPU reference engine (make_cpu_engine): whole-model gradients against finite
// differences of the engine's own loss, AdamW against the formula, overfitting one batch,
// determinism, bit-exact resume through get_state/set_state, gradient accumulation and the
// data-parallel reduction, and the forward-only outputs.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "btm/cpu/engine.hpp"
#include "btm/dist/comm.hpp"
#include "btm/model/engine.hpp"
#include "btm/model/params.hpp"
#include "btm/util/error.hpp"
#include "btm/util/rng.hpp"

namespace {

using btm::Batch;
using btm::Engine;
using btm::ModelConfig;
using btm::Rng;

ModelConfig tiny_model() {
  ModelConfig m;
  m.n_layer = 2;
  m.n_head = 2;
  m.d_model = 16;
  m.context = 8;
  m.vocab_size = 37;
  m.vocab_multiple = 16;  // padded to 48
  return m;
}

// B sequences of T random tokens; targets are the inputs shifted by one, as in training.
struct Tokens {
  std::vector<std::int32_t> inputs, targets;
  int B = 0, T = 0;
  Batch batch() const { return {inputs.data(), targets.data(), B, T}; }
  // Rows [first, first + count) as a batch of its own.
  Batch rows(int first, int count) const {
    const std::size_t o = static_cast<std::size_t>(first) * T;
    return {inputs.data() + o, targets.data() + o, count, T};
  }
};

Tokens random_tokens(int B, int T, int V, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<std::int32_t> seq(static_cast<std::size_t>(B) * (T + 1));
  for (auto& s : seq) s = static_cast<std::int32_t>(rng.next_u64() % static_cast<unsigned>(V));
  Tokens t;
  t.B = B;
  t.T = T;
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < T; ++i) {
      t.inputs.push_back(seq[b * (T + 1) + i]);
      t.targets.push_back(seq[b * (T + 1) + i + 1]);
    }
  return t;
}

std::vector<float> gpt2_params(const btm::ParamLayout& layout, std::uint64_t seed) {
  std::vector<float> p(layout.total());
  btm::init_gpt2(layout, p, seed);
  return p;
}

bool same_bytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<float> grads_of(Engine& e) {
  std::vector<float> g(e.layout().total());
  e.get_grads(g);
  return g;
}
std::vector<float> params_of(const Engine& e) {
  std::vector<float> p(e.layout().total());
  e.get_params(p);
  return p;
}

btm::AdamWStep adamw(std::int64_t t, float lr = 1e-3f) {
  btm::AdamWStep s;
  s.lr = lr;
  s.t = t;
  return s;
}

// One optimizer step per batch seed in [first, last).
void train(Engine& e, int B, std::uint64_t first, std::uint64_t last) {
  const ModelConfig& m = e.layout().model();
  for (std::uint64_t s = first; s < last; ++s) {
    const Tokens tok = random_tokens(B, m.context, m.vocab_size, 1000 + s);
    e.begin_step(1);
    e.forward_backward(tok.batch(), nullptr);
    e.optimizer_step(adamw(static_cast<std::int64_t>(s) + 1));
  }
}

// The engine's mean token loss, from its fp32 log-probabilities summed in double.
double engine_loss(Engine& e, const Tokens& tok) {
  std::vector<float> lp(tok.inputs.size());
  e.token_logprobs(tok.batch(), lp.data());
  double s = 0;
  for (float x : lp) s -= x;
  return s / static_cast<double>(lp.size());
}

// Whole-model gradient check against central differences (h = 1e-2) of the engine's own loss
// (fp32 log-probabilities summed in double). The fp32 forward makes these differences noisy, by
// about 1e-6 absolute (measured), so each tensor is checked where its derivative is large, and
// the GPT-2 init is made less symmetric (weights x4, random biases and LayerNorm parameters) so
// that every tensor's gradient norm is above 5e-3:
//  * along the tensor's own unit gradient direction u, dL/du must equal |g| within 0.2%;
//  * along a random unit direction mixed with u, (u + r) / |u + r| (this also catches a gradient
//    with the right norm and a wrong direction), within 0.2% + 1e-5;
//  * on each tensor's 3 largest entries, within 1% + 1e-5.
// Measured worst relative errors: about 2e-4, 2e-4 and 1e-3 (printed), 5-10x below the bounds;
// a wrong term in any backward gives errors of order 1.
TEST(CpuEngine, GradientsMatchFiniteDifferencesOfTheLoss) {
  const ModelConfig m = tiny_model();
  auto engine = btm::make_cpu_engine(m, 1);
  const btm::ParamLayout& layout = engine->layout();
  std::vector<float> p = gpt2_params(layout, 3);
  Rng rng(99);
  for (const btm::TensorSpec& t : layout.tensors())
    for (std::size_t i = 0; i < t.size; ++i) {
      float& x = p[t.offset + i];
      if (t.shape.size() == 2)
        x *= 4.0f;
      else
        x += static_cast<float>(0.2 * rng.normal());
    }
  // Padded vocab rows stay zero, as in training.
  for (std::size_t i = static_cast<std::size_t>(m.vocab_size) * m.d_model;
       i < static_cast<std::size_t>(m.padded_vocab()) * m.d_model; ++i)
    p[layout.wte() + i] = 0.0f;
  engine->set_params(p);
  const Tokens tok = random_tokens(2, m.context, m.vocab_size, 5);

  engine->begin_step(1);
  const float loss = engine->forward_backward(tok.batch(), nullptr);
  EXPECT_NEAR(loss, engine_loss(*engine, tok), 1e-6);
  const std::vector<float> g = grads_of(*engine);

  // Padded vocab rows get exactly zero gradient.
  for (std::size_t i = static_cast<std::size_t>(m.vocab_size) * m.d_model;
       i < static_cast<std::size_t>(m.padded_vocab()) * m.d_model; ++i)
    ASSERT_EQ(g[layout.wte() + i], 0.0f);

  // Central difference of the loss along direction d (restricted to one tensor).
  auto directional = [&](const btm::TensorSpec& t, const std::vector<double>& d, double h) {
    std::vector<float> q = p;
    for (std::size_t i = 0; i < t.size; ++i) q[t.offset + i] = p[t.offset + i] + float(h * d[i]);
    engine->set_params(q);
    const double up = engine_loss(*engine, tok);
    for (std::size_t i = 0; i < t.size; ++i) q[t.offset + i] = p[t.offset + i] - float(h * d[i]);
    engine->set_params(q);
    const double down = engine_loss(*engine, tok);
    engine->set_params(p);
    return (up - down) / (2 * h);
  };
  auto unit = [](std::vector<double> d) {
    double n = 0;
    for (double x : d) n += x * x;
    for (double& x : d) x /= std::sqrt(n);
    return d;
  };

  double worst_norm = 0, worst_mixed = 0, worst_element = 0;
  for (const btm::TensorSpec& t : layout.tensors()) {
    std::vector<double> gt(g.begin() + t.offset, g.begin() + t.offset + t.size);
    double norm = 0;
    for (double x : gt) norm += x * x;
    norm = std::sqrt(norm);
    ASSERT_GT(norm, 5e-3) << t.name << ": too small a gradient for this check";

    const std::vector<double> u = unit(gt);
    const double along = directional(t, u, 1e-2);
    worst_norm = std::max(worst_norm, std::abs(along - norm) / norm);
    EXPECT_NEAR(along, norm, 2e-3 * norm) << t.name;

    std::vector<double> mixed(t.size);
    for (std::size_t i = 0; i < t.size; ++i) mixed[i] = u[i] + rng.normal() / std::sqrt(t.size);
    mixed = unit(mixed);
    double expected = 0;
    for (std::size_t i = 0; i < t.size; ++i) expected += gt[i] * mixed[i];
    const double fd_mixed = directional(t, mixed, 1e-2);
    worst_mixed = std::max(worst_mixed, std::abs(fd_mixed - expected) / std::abs(expected));
    EXPECT_NEAR(fd_mixed, expected, 2e-3 * std::abs(expected) + 1e-5) << t.name;

    std::vector<std::size_t> order(t.size);
    for (std::size_t i = 0; i < t.size; ++i) order[i] = i;
    const std::size_t k = std::min<std::size_t>(3, t.size);
    std::partial_sort(
        order.begin(), order.begin() + k, order.end(),
        [&](std::size_t a, std::size_t b) { return std::abs(gt[a]) > std::abs(gt[b]); });
    for (std::size_t j = 0; j < k; ++j) {
      std::vector<double> e(t.size, 0.0);
      e[order[j]] = 1.0;
      const double fd = directional(t, e, 1e-2);
      const double a = gt[order[j]];
      worst_element = std::max(worst_element, std::abs(fd - a) / std::abs(a));
      EXPECT_NEAR(fd, a, 1e-2 * std::abs(a) + 1e-5) << t.name << "[" << order[j] << "]";
    }
  }
  std::printf("  relative error: along gradient %.2e, mixed direction %.2e, element %.2e\n",
              worst_norm, worst_mixed, worst_element);
}

TEST(CpuEngine, AdamWDecaysOnlyTwoDimensionalWeights) {
  // No gradient and zero moments: the Adam term is 0 / (0 + eps) = 0, so only the decoupled
  // decay moves parameters, p * (1 - lr * wd), and only for 2-D weights.
  auto engine = btm::make_cpu_engine(tiny_model(), 1);
  const btm::ParamLayout& layout = engine->layout();
  std::vector<float> p = gpt2_params(layout, 4);
  Rng rng(8);
  for (float& x : p) x += static_cast<float>(0.1 * rng.normal());  // biases and LN non-zero too
  const std::vector<float> zeros(layout.total(), 0.0f);
  engine->set_state(p, zeros, zeros);
  engine->begin_step(1);
  btm::AdamWStep s = adamw(1, 0.05f);
  s.weight_decay = 0.2f;
  EXPECT_EQ(engine->optimizer_step(s), 0.0f);
  const std::vector<float> after = params_of(*engine);
  const btm::TensorSpec& weight = layout.find("h.1.attn.c_attn.weight");
  const btm::TensorSpec& bias = layout.find("h.1.attn.c_attn.bias");
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_NEAR(after[weight.offset + i], p[weight.offset + i] * (1.0 - 0.05 * 0.2), 1e-7);
    EXPECT_EQ(after[bias.offset + i], p[bias.offset + i]);
  }
}

TEST(CpuEngine, AdamWStepMatchesTheFormulaWithClipping) {
  const ModelConfig m = tiny_model();
  auto engine = btm::make_cpu_engine(m, 1);
  const btm::ParamLayout& layout = engine->layout();
  const std::size_t n = layout.total();
  std::vector<float> p = gpt2_params(layout, 6), m0(n), v0(n);
  Rng rng(7);
  for (std::size_t i = 0; i < n; ++i) {
    p[i] += static_cast<float>(0.05 * rng.normal());
    m0[i] = static_cast<float>(1e-3 * rng.normal());
    v0[i] = static_cast<float>(1e-6 * std::abs(rng.normal()));
  }
  engine->set_state(p, m0, v0);
  const Tokens tok = random_tokens(2, m.context, m.vocab_size, 9);
  engine->begin_step(1);
  engine->forward_backward(tok.batch(), nullptr);
  const std::vector<float> g = grads_of(*engine);

  double sq = 0;
  for (float x : g) sq += static_cast<double>(x) * x;
  const double norm = std::sqrt(sq);
  btm::AdamWStep s;
  s.lr = 0.01f;
  s.beta1 = 0.9f;
  s.beta2 = 0.95f;
  s.eps = 1e-8f;
  s.weight_decay = 0.1f;
  s.grad_clip = static_cast<float>(0.25 * norm);  // clipping active: scale 1/4
  s.t = 3;
  const float returned = engine->optimizer_step(s);
  EXPECT_NEAR(returned, norm, 1e-6 * norm);

  std::vector<float> p1(n), m1(n), v1(n);
  engine->get_state(p1, m1, v1);
  // The formula in double, on the step's (float) hyperparameters.
  const double clip = s.grad_clip / (norm + 1e-6);
  ASSERT_LT(clip, 0.26);
  const double lr = s.lr, b1 = s.beta1, b2 = s.beta2, eps = s.eps;
  const double bias1 = 1 - std::pow(b1, 3), bias2 = 1 - std::pow(b2, 3);
  int decayed = 0, not_decayed = 0;
  for (const btm::TensorSpec& t : layout.tensors()) {
    const double wd = t.weight_decay ? static_cast<double>(s.weight_decay) : 0.0;
    (t.weight_decay ? decayed : not_decayed)++;
    for (std::size_t i = t.offset; i < t.offset + t.size; ++i) {
      const double gi = g[i] * clip;
      const double me = b1 * m0[i] + (1 - b1) * gi;
      const double ve = b2 * v0[i] + (1 - b2) * gi * gi;
      const double pe = p[i] * (1 - lr * wd) - lr * (me / bias1) / (std::sqrt(ve / bias2) + eps);
      // fp32 rounding, relative to the terms summed (m may cancel).
      const double m_tol = 1e-6 * (std::abs(b1 * m0[i]) + std::abs((1 - b1) * gi)) + 1e-15;
      ASSERT_NEAR(m1[i], me, m_tol) << t.name << " " << i - t.offset;
      ASSERT_NEAR(v1[i], ve, 1e-6 * ve + 1e-20) << t.name << " " << i - t.offset;
      // The Adam term is about lr; its fp32 error, amplified by the moments' rounding, < 1e-4 lr.
      ASSERT_NEAR(p1[i], pe, 1e-4 * lr + 1e-6 * std::abs(pe)) << t.name << " " << i - t.offset;
    }
  }
  EXPECT_GT(decayed, 0);
  EXPECT_GT(not_decayed, 0);
}

TEST(CpuEngine, OverfitsOneBatch) {
  ModelConfig m = tiny_model();
  m.d_model = 32;
  m.n_head = 4;
  m.context = 16;
  auto engine = btm::make_cpu_engine(m, 2);
  engine->set_params(gpt2_params(engine->layout(), 11));
  const Tokens tok = random_tokens(4, m.context, m.vocab_size, 12);
  float first = 0, last = 0;
  for (int step = 1; step <= 150; ++step) {
    engine->begin_step(1);
    last = engine->forward_backward(tok.batch(), nullptr);
    if (step == 1) first = last;
    btm::AdamWStep s = adamw(step, 3e-3f);
    s.weight_decay = 0.0f;
    engine->optimizer_step(s);
  }
  std::printf("  loss %.4f -> %.4f after 150 steps\n", first, last);
  EXPECT_NEAR(first, std::log(37.0), 0.2);  // ~uniform at init
  EXPECT_LT(last, 0.1f * first);
}

TEST(CpuEngine, SameInputsGiveTheSameBytes) {
  const ModelConfig m = tiny_model();
  // Two engines with the same thread count (the contract), and one with another (the kernels
  // partition work independently of the thread count, so that agrees too).
  auto a = btm::make_cpu_engine(m, 2), b = btm::make_cpu_engine(m, 2),
       c = btm::make_cpu_engine(m, 1);
  const std::vector<float> p = gpt2_params(a->layout(), 21);
  for (Engine* e : {a.get(), b.get(), c.get()}) {
    e->set_params(p);
    train(*e, 3, 0, 5);
  }
  EXPECT_FALSE(same_bytes(params_of(*a), p));
  EXPECT_TRUE(same_bytes(params_of(*a), params_of(*b)));
  EXPECT_TRUE(same_bytes(grads_of(*a), grads_of(*b)));
  EXPECT_TRUE(same_bytes(params_of(*a), params_of(*c)));
}

TEST(CpuEngine, ResumeFromStateIsBitExact) {
  const ModelConfig m = tiny_model();
  const std::size_t n = btm::ParamLayout(m).total();
  auto whole = btm::make_cpu_engine(m, 2), first = btm::make_cpu_engine(m, 2);
  const std::vector<float> p = gpt2_params(whole->layout(), 31);
  whole->set_params(p);
  first->set_params(p);
  train(*whole, 2, 0, 8);
  train(*first, 2, 0, 4);

  std::vector<float> sp(n), sm(n), sv(n);
  first->get_state(sp, sm, sv);
  auto second = btm::make_cpu_engine(m, 2);
  second->set_state(sp, sm, sv);
  train(*second, 2, 4, 8);

  std::vector<float> wp(n), wm(n), wv(n), rp(n), rm(n), rv(n);
  whole->get_state(wp, wm, wv);
  second->get_state(rp, rm, rv);
  EXPECT_TRUE(same_bytes(wp, rp));
  EXPECT_TRUE(same_bytes(wm, rm));
  EXPECT_TRUE(same_bytes(wv, rv));
}

TEST(CpuEngine, HalfBatchesAccumulateToTheFullBatchGradient) {
  const ModelConfig m = tiny_model();
  auto engine = btm::make_cpu_engine(m, 2);
  engine->set_params(gpt2_params(engine->layout(), 41));
  const Tokens tok = random_tokens(4, m.context, m.vocab_size, 42);

  engine->begin_step(1);
  const float full_loss = engine->forward_backward(tok.batch(), nullptr);
  const std::vector<float> full = grads_of(*engine);

  // Two micro-batches of 2: the mean of their mean-loss gradients is the full batch's.
  engine->begin_step(2);
  const float l0 = engine->forward_backward(tok.rows(0, 2), nullptr);
  const float l1 = engine->forward_backward(tok.rows(2, 2), nullptr);
  const std::vector<float> halves = grads_of(*engine);

  EXPECT_NEAR(full_loss, 0.5f * (l0 + l1), 1e-6);
  double max_g = 0, max_diff = 0;
  for (std::size_t i = 0; i < full.size(); ++i) {
    max_g = std::max(max_g, std::abs(static_cast<double>(full[i])));
    max_diff = std::max(max_diff, std::abs(static_cast<double>(full[i]) - halves[i]));
  }
  std::printf("  max |difference| / max |gradient| = %.2e\n", max_diff / max_g);
  EXPECT_LT(max_diff, 1e-6 * max_g);
}

// The exact (fixed-point) sum of a step's micro-batch gradients does not depend on their order,
// which is what makes a step the same bits on any number of ranks; a float sum generally does.
TEST(CpuEngine, MicroBatchOrderDoesNotChangeTheStepsBits) {
  const ModelConfig m = tiny_model();
  auto engine = btm::make_cpu_engine(m, 2);
  const std::vector<float> start = gpt2_params(engine->layout(), 43);
  const Tokens tok = random_tokens(3, m.context, m.vocab_size, 44);
  const std::size_t n = engine->layout().total();
  auto step = [&](std::initializer_list<int> order) {
    const std::vector<float> zeros(n, 0.0f);
    engine->set_state(start, zeros, zeros);
    engine->begin_step(3);
    for (int b : order) engine->forward_backward(tok.rows(b, 1), nullptr);
    std::vector<float> g = grads_of(*engine);
    engine->optimizer_step(adamw(1));
    return std::make_pair(g, params_of(*engine));
  };
  const auto [g012, p012] = step({0, 1, 2});
  const auto [g201, p201] = step({2, 0, 1});
  const auto [g120, p120] = step({1, 2, 0});
  EXPECT_TRUE(same_bytes(g012, g201));
  EXPECT_TRUE(same_bytes(g012, g120));
  EXPECT_TRUE(same_bytes(p012, p201));
  EXPECT_TRUE(same_bytes(p012, p120));

  // The same micro-batch gradients summed in float in two orders: not all bits agree, so the
  // exact sum above is what makes the orders agree.
  std::vector<std::vector<float>> single;
  for (int b = 0; b < 3; ++b) {
    engine->set_params(start);
    engine->begin_step(1);
    engine->forward_backward(tok.rows(b, 1), nullptr);
    single.push_back(grads_of(*engine));
  }
  std::size_t differ = 0;
  for (std::size_t i = 0; i < n; ++i)
    differ += (single[0][i] + single[1][i]) + single[2][i] !=
              (single[2][i] + single[0][i]) + single[1][i];
  EXPECT_GT(differ, 0u);
  // And the exact mean is within fp32 rounding of the float mean.
  for (std::size_t i = 0; i < n; ++i)
    ASSERT_NEAR(g012[i], ((single[0][i] + single[1][i]) + single[2][i]) / 3.0f,
                1e-6f * (std::abs(single[0][i]) + std::abs(single[1][i]) + std::abs(single[2][i])) +
                    2e-12f);
}

TEST(CpuEngine, NonFiniteGradientLeavesTheStateUnchanged) {
  const ModelConfig m = tiny_model();
  auto engine = btm::make_cpu_engine(m, 1);
  std::vector<float> p = gpt2_params(engine->layout(), 45);
  p[engine->layout().wpe()] = std::numeric_limits<float>::infinity();  // poisons the gradients
  const std::size_t n = engine->layout().total();
  const std::vector<float> zeros(n, 0.0f);
  const Tokens tok = random_tokens(2, m.context, m.vocab_size, 46);
  for (std::int64_t micro_batches : {1, 2}) {
    SCOPED_TRACE(micro_batches);
    engine->set_state(p, zeros, zeros);
    engine->begin_step(micro_batches);
    for (std::int64_t b = 0; b < micro_batches; ++b)
      engine->forward_backward(tok.rows(static_cast<int>(b), 1), nullptr);
    EXPECT_FALSE(std::isfinite(engine->optimizer_step(adamw(1))));
    std::vector<float> p1(n), m1(n), v1(n);
    engine->get_state(p1, m1, v1);
    EXPECT_TRUE(same_bytes(p1, p));
    EXPECT_TRUE(same_bytes(m1, zeros));
    EXPECT_TRUE(same_bytes(v1, zeros));
  }
}

TEST(CpuEngine, ReduceOverOneRankLeavesGradientsUnchanged) {
  const ModelConfig m = tiny_model();
  auto engine = btm::make_cpu_engine(m, 1);
  engine->set_params(gpt2_params(engine->layout(), 51));
  const Tokens tok = random_tokens(2, m.context, m.vocab_size, 52);
  engine->begin_step(2);
  engine->forward_backward(tok.rows(0, 1), nullptr);
  const float plain_loss = engine->forward_backward(tok.rows(1, 1), nullptr);
  const std::vector<float> plain = grads_of(*engine);

  btm::MpiComm self(MPI_COMM_SELF, false);
  engine->begin_step(2);
  engine->forward_backward(tok.rows(0, 1), nullptr);
  const float reduced_loss = engine->forward_backward(tok.rows(1, 1), &self);
  EXPECT_EQ(plain_loss, reduced_loss);
  EXPECT_TRUE(same_bytes(plain, grads_of(*engine)));
  EXPECT_EQ(self.bytes_sent(), 0u);  // nothing to sum over one rank
}

TEST(CpuEngine, LogprobsAndLogitsAgreeWithTheLoss) {
  const ModelConfig m = tiny_model();
  const int Vp = m.padded_vocab(), V = m.vocab_size;
  auto engine = btm::make_cpu_engine(m, 2);
  engine->set_params(gpt2_params(engine->layout(), 61));
  const Tokens tok = random_tokens(3, m.context, V, 62);
  const std::size_t BT = tok.inputs.size();

  std::vector<float> lp(BT), logits(BT * Vp);
  engine->token_logprobs(tok.batch(), lp.data());
  engine->logits(tok.batch(), logits.data());
  double sum = 0;
  for (std::size_t i = 0; i < BT; ++i) {
    const float* row = &logits[i * Vp];
    double z = 0;
    for (int j = 0; j < V; ++j) z += std::exp(static_cast<double>(row[j]));
    EXPECT_NEAR(lp[i], row[tok.targets[i]] - std::log(z), 1e-5);
    for (int j = V; j < Vp; ++j) ASSERT_EQ(row[j], 0.0f);  // padded wte rows are zero
    sum -= lp[i];
  }
  engine->begin_step(1);
  EXPECT_NEAR(engine->forward_backward(tok.batch(), nullptr), sum / BT, 1e-6);

  // A prefix does not see later tokens: the log-probs of a shorter T agree.
  Batch shorter{tok.inputs.data(), tok.targets.data(), 1, 5};
  std::vector<float> lp_short(5);
  engine->token_logprobs(shorter, lp_short.data());
  for (int t = 0; t < 5; ++t) EXPECT_NEAR(lp_short[t], lp[t], 1e-6);
}

TEST(CpuEngine, BatchSizeCanGrowAndShrink) {
  const ModelConfig m = tiny_model();
  auto engine = btm::make_cpu_engine(m, 2);
  engine->set_params(gpt2_params(engine->layout(), 71));
  const Tokens big = random_tokens(5, m.context, m.vocab_size, 72);
  std::vector<float> small_first(m.context), big_lp(5 * m.context), small_again(m.context);
  engine->token_logprobs(big.rows(0, 1), small_first.data());
  engine->token_logprobs(big.batch(), big_lp.data());
  engine->token_logprobs(big.rows(0, 1), small_again.data());
  EXPECT_TRUE(same_bytes(small_first, small_again));
  for (int t = 0; t < m.context; ++t) EXPECT_NEAR(big_lp[t], small_first[t], 1e-6);
}

TEST(CpuEngine, RejectsWrongSizesAndTokens) {
  const ModelConfig m = tiny_model();
  auto engine = btm::make_cpu_engine(m, 1);
  EXPECT_EQ(engine->kind(), "cpu");
  const std::size_t n = engine->layout().total();
  std::vector<float> wrong(n + 1), right(n);
  EXPECT_THROW(engine->set_params(wrong), std::invalid_argument);
  EXPECT_THROW(engine->get_params(wrong), std::invalid_argument);
  EXPECT_THROW(engine->get_grads(wrong), std::invalid_argument);
  EXPECT_THROW(engine->set_state(right, wrong, right), std::invalid_argument);
  EXPECT_THROW(engine->get_state(right, right, wrong), std::invalid_argument);

  Tokens tok = random_tokens(1, m.context, m.vocab_size, 81);
  std::vector<float> out(static_cast<std::size_t>(m.context) * m.padded_vocab());
  tok.targets[3] = m.vocab_size;  // a padded id is not a token
  EXPECT_THROW(engine->token_logprobs(tok.batch(), out.data()), btm::InputError);
  Batch too_long{tok.inputs.data(), tok.targets.data(), 1, m.context + 1};
  EXPECT_THROW(engine->logits(too_long, out.data()), std::invalid_argument);

  // A model shape the config would refuse, refused with the same message.
  ModelConfig odd = m;
  odd.n_head = 3;
  try {
    btm::make_cpu_engine(odd, 1);
    FAIL() << "n_head 3 accepted";
  } catch (const btm::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model.d_model"), std::string::npos) << e.what();
  }
}

}  // namespace

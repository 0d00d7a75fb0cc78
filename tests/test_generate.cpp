// Text generation: the engines' key/value cache against the full forward, sampling, the
// ensemble's next-token posterior and mixture against hand-computed cases, generation from a
// model and from the ensemble, and btm generate's errors.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>
#include <map>
#include <sstream>

#include "btm/cpu/engine.hpp"
#include "btm/eval/generate.hpp"
#include "btm/eval/groups.hpp"
#include "btm/method/ensemble.hpp"
#include "btm/method/sampling.hpp"
#include "btm/pipeline/run_context.hpp"
#include "btm/util/error.hpp"
#include "generate_test_util.hpp"
#include "test_util.hpp"

using namespace btm;
namespace fs = std::filesystem;
using btm::test::generate_model;
using btm::test::random_params;

namespace {

std::vector<std::int32_t> random_tokens(std::size_t n, int vocab, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<std::int32_t> t(n);
  for (auto& x : t)
    x = static_cast<std::int32_t>(rng.next_u64() % static_cast<std::uint64_t>(vocab));
  return t;
}

std::unique_ptr<Engine> cpu_engine(const ModelConfig& m, std::uint64_t seed) {
  auto e = make_cpu_engine(m, 1);
  e->set_params(random_params(m, seed));
  return e;
}

// The full forward's logits of B sequences of T tokens, [B, T, Vp].
std::vector<float> full_logits(Engine& e, const std::vector<std::int32_t>& tokens, int B, int T) {
  std::vector<float> out(static_cast<std::size_t>(B) * T * e.layout().model().padded_vocab());
  e.logits({tokens.data(), nullptr, B, T}, out.data());
  return out;
}

// An engine without a cache of its own: the base class's decode (recomputing) over a CPU engine.
class NoCacheEngine final : public Engine {
 public:
  explicit NoCacheEngine(std::unique_ptr<Engine> inner) : inner_(std::move(inner)) {}
  std::string kind() const override { return "test"; }
  const ParamLayout& layout() const override { return inner_->layout(); }
  void set_state(std::span<const float> p, std::span<const float> m,
                 std::span<const float> v) override {
    inner_->set_state(p, m, v);
  }
  void get_state(std::span<float> p, std::span<float> m, std::span<float> v) const override {
    inner_->get_state(p, m, v);
  }
  void get_params(std::span<float> p) const override { inner_->get_params(p); }
  void set_params(std::span<const float> p) override { inner_->set_params(p); }
  void begin_step(std::int64_t m) override { inner_->begin_step(m); }
  float forward_backward(const Batch& b, Communicator* c) override {
    return inner_->forward_backward(b, c);
  }
  void get_grads(std::span<float> g) override { inner_->get_grads(g); }
  float optimizer_step(const AdamWStep& s) override { return inner_->optimizer_step(s); }
  void token_logprobs(const Batch& b, float* out) override { inner_->token_logprobs(b, out); }
  void logits(const Batch& b, float* out) override { inner_->logits(b, out); }

 private:
  std::unique_ptr<Engine> inner_;
};

// Decoding `tokens` ([B, T]) in the given chunk lengths gives the full forward's logits at
// every position, within `tol` of the largest logit.
void expect_decode_matches_full(Engine& e, const std::vector<std::int32_t>& tokens, int B, int T,
                                const std::vector<int>& chunks, double tol) {
  const std::vector<float> full = full_logits(e, tokens, B, T);
  const std::size_t Vp = static_cast<std::size_t>(e.layout().model().padded_vocab());
  double scale = 0;
  for (float x : full) scale = std::max(scale, static_cast<double>(std::abs(x)));
  ASSERT_GT(scale, 0.5);  // the logits are not trivially small
  e.begin_decode(B, T);
  int pos = 0;
  for (int n : chunks) {
    std::vector<std::int32_t> part(static_cast<std::size_t>(B) * n);
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < n; ++i)
        part[static_cast<std::size_t>(b * n + i)] =
            tokens[static_cast<std::size_t>(b * T + pos + i)];
    std::vector<float> out(static_cast<std::size_t>(B) * n * Vp);
    e.decode(part.data(), n, out.data());
    double worst = 0;
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < n; ++i)
        for (std::size_t v = 0; v < Vp; ++v) {
          const float got = out[(static_cast<std::size_t>(b) * n + i) * Vp + v];
          const float want = full[(static_cast<std::size_t>(b) * T + pos + i) * Vp + v];
          worst = std::max(worst, static_cast<double>(std::abs(got - want)));
        }
    EXPECT_LE(worst, tol * scale) << "positions " << pos << ".." << pos + n - 1;
    pos += n;
    EXPECT_EQ(e.decode_length(), pos);
  }
  ASSERT_EQ(pos, T);
}

}  // namespace

TEST(KvCache, CpuDecodeEqualsTheFullForwardAtEveryPosition) {
  const ModelConfig m = generate_model();
  auto e = cpu_engine(m, 3);
  const int B = 3, T = m.context;
  const auto tokens = random_tokens(static_cast<std::size_t>(B) * T, m.vocab_size, 7);
  EXPECT_EQ(e->decode_mode(), "kv-cache");
  // A prompt of 5, single steps, a chunk of 4 in the middle, steps to the end of the context.
  std::vector<int> chunks = {5, 1, 1, 4, 1, 1, 1};
  int used = 14;
  while (used < T) chunks.push_back(1), ++used;
  expect_decode_matches_full(*e, tokens, B, T, chunks, 1e-5);
  // Beginning again forgets the old sequences: one token at a time from position 0.
  expect_decode_matches_full(*e, tokens, B, T, std::vector<int>(static_cast<std::size_t>(T), 1),
                             1e-5);
}

TEST(KvCache, TheFallbackWithoutACacheRecomputesTheSameLogits) {
  const ModelConfig m = generate_model();
  NoCacheEngine e(cpu_engine(m, 4));
  EXPECT_EQ(e.decode_mode(), "full-forward");
  const int B = 2, T = 10;
  const auto tokens = random_tokens(static_cast<std::size_t>(B) * T, m.vocab_size, 8);
  // The same computation on fewer rows: OpenBLAS may block a GEMM of fewer rows differently
  // (on some CPUs), so equal within a few ulps of the largest logit, not bitwise.
  expect_decode_matches_full(e, tokens, B, T, {3, 1, 1, 5}, 1e-6);
}

TEST(KvCache, PositionsPastTheCapacityOrContextAreRefused) {
  const ModelConfig m = generate_model();
  auto e = cpu_engine(m, 5);
  EXPECT_THROW(e->begin_decode(1, m.context + 1), InputError);
  EXPECT_THROW(e->begin_decode(1, 0), InputError);
  std::vector<float> out(static_cast<std::size_t>(4) * m.padded_vocab());
  const std::vector<std::int32_t> t = {1, 2, 3, 4};
  EXPECT_THROW(e->decode(t.data(), 1, out.data()), std::logic_error);  // before begin
  e->begin_decode(1, 3);
  e->decode(t.data(), 2, out.data());
  EXPECT_THROW(e->decode(t.data(), 2, out.data()), InputError);  // 4 > capacity 3
  e->decode(t.data(), 1, out.data());
  EXPECT_THROW(e->decode(t.data(), 1, out.data()), InputError);
}

TEST(Sampling, BadOptionsAreInputErrorsNamingTheOption) {
  auto message = [](sampling::Options o) {
    try {
      sampling::check(o);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  sampling::Options o;
  EXPECT_EQ(message(o), "");
  o.top_p = 0;
  EXPECT_NE(message(o).find("--top-p"), std::string::npos);
  o.top_p = 1.5;
  EXPECT_NE(message(o).find("--top-p"), std::string::npos);
  o.top_p = std::nan("");
  EXPECT_NE(message(o).find("--top-p"), std::string::npos);
  o = {};
  o.temperature = -1;
  EXPECT_NE(message(o).find("--temperature"), std::string::npos);
  o = {};
  o.top_k = -2;
  EXPECT_NE(message(o).find("--top-k"), std::string::npos);
}

TEST(Sampling, GreedyIsTheArgmaxAndTheLowestIdAmongEquals) {
  const std::vector<double> logp = {-3, -0.5, -2, -0.5, -9};
  Rng rng(1);
  sampling::Options greedy;
  greedy.temperature = 0;
  EXPECT_EQ(sampling::sample(logp, greedy, rng), 1);
  sampling::Options top1;
  top1.top_k = 1;
  EXPECT_EQ(sampling::sample(logp, top1, rng), 1);
  EXPECT_EQ(rng.state(), Rng(1).state());  // greedy draws no random number
}

// Empirical frequencies of `draws` samples.
std::vector<double> frequencies(const std::vector<double>& logp, const sampling::Options& o,
                                int draws, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<double> f(logp.size(), 0);
  for (int i = 0; i < draws; ++i) f[static_cast<std::size_t>(sampling::sample(logp, o, rng))] += 1;
  for (double& x : f) x /= draws;
  return f;
}

TEST(Sampling, DrawsFollowTheFilteredAndTemperedDistribution) {
  const std::vector<double> p = {0.5, 0.3, 0.15, 0.05};
  std::vector<double> logp;
  for (double x : p) logp.push_back(std::log(x));
  const int n = 40000;
  const double tol = 0.012;  // about 5 standard deviations of a frequency near 0.5
  const std::vector<double> plain = frequencies(logp, {}, n, 11);
  for (std::size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(plain[i], p[i], tol) << i;
  sampling::Options k2;
  k2.top_k = 2;
  const std::vector<double> topk = frequencies(logp, k2, n, 12);
  EXPECT_NEAR(topk[0], 0.5 / 0.8, tol);
  EXPECT_NEAR(topk[1], 0.3 / 0.8, tol);
  EXPECT_EQ(topk[2] + topk[3], 0);
  sampling::Options nucleus;
  nucleus.top_p = 0.75;  // 0.5 + 0.3 reaches it: tokens 0 and 1
  const std::vector<double> topp = frequencies(logp, nucleus, n, 13);
  EXPECT_NEAR(topp[0], 0.5 / 0.8, tol);
  EXPECT_EQ(topp[2] + topp[3], 0);
  nucleus.top_p = 0.4;  // the first token alone reaches it
  EXPECT_EQ(frequencies(logp, nucleus, 1000, 14)[0], 1.0);
  sampling::Options hot;
  hot.temperature = 2;  // p^(1/2), renormalised
  double z = 0;
  for (double x : p) z += std::sqrt(x);
  const std::vector<double> tempered = frequencies(logp, hot, n, 15);
  for (std::size_t i = 0; i < p.size(); ++i) EXPECT_NEAR(tempered[i], std::sqrt(p[i]) / z, tol);
}

TEST(Sampling, TheSameSeedGivesTheSameDrawsAndSamplesHaveStreamsOfTheirOwn) {
  std::vector<double> logp(50, std::log(1.0 / 50));
  auto draws = [&](std::uint64_t seed, int sample) {
    Rng rng = sampling::sample_rng(seed, sample);
    std::vector<int> out;
    for (int i = 0; i < 30; ++i) out.push_back(sampling::sample(logp, {}, rng));
    return out;
  };
  EXPECT_EQ(draws(5, 0), draws(5, 0));
  EXPECT_NE(draws(5, 0), draws(6, 0));
  EXPECT_NE(draws(5, 0), draws(5, 1));
}

TEST(EnsembleGeneration, NextTokenPosteriorMatchesTheHandComputedCase) {
  const std::vector<double> prior = {0.25, 0.75};
  const std::vector<std::vector<float>> h = {{std::log(0.5f), std::log(0.2f)},
                                             {std::log(0.1f), std::log(0.4f)}};
  const auto view = ensemble::LogProbView::from_vectors(h, 2);
  const auto near = [](const std::vector<double>& log_post, double a, double b) {
    EXPECT_NEAR(std::exp(log_post[0]), a, 1e-6);
    EXPECT_NEAR(std::exp(log_post[1]), b, 1e-6);
  };
  // prefix: 0.25 * 0.5 * 0.2 = 0.025 against 0.75 * 0.1 * 0.4 = 0.03
  near(ensemble::next_log_posterior(view, prior, Posterior::prefix), 0.025 / 0.055, 0.03 / 0.055);
  // prev-token: 0.25 * 0.2 = 0.05 against 0.75 * 0.4 = 0.3
  near(ensemble::next_log_posterior(view, prior, Posterior::prev_token), 0.05 / 0.35, 0.3 / 0.35);
  // No token yet: the prior; an ELM with prior 0 stays at -inf.
  const std::vector<std::vector<float>> none = {{}, {}};
  near(ensemble::next_log_posterior(ensemble::LogProbView::from_vectors(none, 1), prior,
                                    Posterior::prefix),
       0.25, 0.75);
  const std::vector<double> one = {0.0, 1.0};
  EXPECT_EQ(ensemble::next_log_posterior(view, one, Posterior::prefix)[0],
            -std::numeric_limits<double>::infinity());
  // The same as the evaluation's posterior at the position after the block.
  const std::vector<std::vector<float>> longer = {{h[0][0], h[0][1], 0.0f},
                                                  {h[1][0], h[1][1], 0.0f}};
  const auto eval_post = ensemble::log_posterior(ensemble::LogProbView::from_vectors(longer, 3),
                                                 prior, Posterior::prefix);
  const auto next = ensemble::next_log_posterior(view, prior, Posterior::prefix);
  EXPECT_NEAR(next[0], eval_post[2 * 2 + 0], 1e-12);
  EXPECT_NEAR(next[1], eval_post[2 * 2 + 1], 1e-12);
}

TEST(EnsembleGeneration, MixtureMatchesTheHandComputedCase) {
  const std::vector<float> a = {std::log(0.7f), std::log(0.2f), std::log(0.1f)};
  const std::vector<float> b = {std::log(0.1f), std::log(0.3f), std::log(0.6f)};
  const std::vector<double> log_post = {std::log(0.4), std::log(0.6)};
  const auto mixed = ensemble::mixture_next_token(log_post, {a, b});
  const double want[] = {0.4 * 0.7 + 0.6 * 0.1, 0.4 * 0.2 + 0.6 * 0.3, 0.4 * 0.1 + 0.6 * 0.6};
  for (int v = 0; v < 3; ++v)
    EXPECT_NEAR(std::exp(mixed[static_cast<std::size_t>(v)]), want[v], 1e-6);
  // An ELM with no weight is not read (its row may be empty).
  const std::vector<double> only_b = {-std::numeric_limits<double>::infinity(), 0.0};
  const auto just_b = ensemble::mixture_next_token(only_b, {std::span<const float>(), b});
  for (int v = 0; v < 3; ++v)
    EXPECT_EQ(just_b[static_cast<std::size_t>(v)], b[static_cast<std::size_t>(v)]);
}

namespace {

// Greedy tokens by the full forward: the argmax of the last position's logits, appended each
// step (the reference of the cached generation).
std::vector<std::int32_t> greedy_by_full_forward(Engine& e, std::vector<std::int32_t> seq,
                                                 int steps) {
  const int V = e.layout().model().vocab_size;
  const std::size_t Vp = static_cast<std::size_t>(e.layout().model().padded_vocab());
  std::vector<std::int32_t> out;
  for (int s = 0; s < steps; ++s) {
    const int T = static_cast<int>(seq.size());
    const std::vector<float> logits = full_logits(e, seq, 1, T);
    const float* last = logits.data() + static_cast<std::size_t>(T - 1) * Vp;
    const int best = static_cast<int>(std::max_element(last, last + V) - last);
    out.push_back(best);
    seq.push_back(best);
  }
  return out;
}

}  // namespace

TEST(Generation, GreedyEqualsTheArgmaxOfTheFullForward) {
  const ModelConfig m = generate_model();
  auto e = cpu_engine(m, 21);
  GenerateRequest r;
  r.prompt = {72, 101, 108, 108, 111};
  r.max_tokens = 12;
  r.samples = 2;
  for (const char* mode : {"temperature", "top-k"}) {
    r.sampling = {};
    if (std::string(mode) == "temperature")
      r.sampling.temperature = 0;
    else
      r.sampling.top_k = 1;
    const Generated g = generate_from_model(*e, r);
    ASSERT_EQ(g.tokens.size(), 2u);
    const auto want = greedy_by_full_forward(*e, r.prompt, r.max_tokens);
    EXPECT_EQ(g.tokens[0], want) << mode;
    EXPECT_EQ(g.tokens[1], want) << mode;
    EXPECT_EQ(g.steps, r.max_tokens);
  }
}

TEST(Generation, TheSameSeedGivesTheSameTextAndTheStopTokenEndsASample) {
  const ModelConfig m = generate_model();
  auto e = cpu_engine(m, 22);
  GenerateRequest r;
  r.prompt = {65, 66};
  r.max_tokens = 20;
  r.samples = 3;
  r.seed = 9;
  const Generated a = generate_from_model(*e, r);
  const Generated b = generate_from_model(*e, r);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_NE(a.tokens[0], a.tokens[1]);  // samples have streams of their own
  r.seed = 10;
  EXPECT_NE(generate_from_model(*e, r).tokens, a.tokens);
  // Stopping at a token the first sample draws: it ends there, the others go on.
  r.seed = 9;
  r.stop_token = a.tokens[0][3];
  const Generated s = generate_from_model(*e, r);
  const auto first = std::find(a.tokens[0].begin(), a.tokens[0].end(), r.stop_token);
  EXPECT_EQ(s.tokens[0], std::vector<std::int32_t>(a.tokens[0].begin(), first + 1));
  for (std::size_t k = 0; k < 3; ++k) {
    const auto& t = s.tokens[k];
    const auto stop = std::find(a.tokens[k].begin(), a.tokens[k].end(), r.stop_token);
    EXPECT_EQ(t, std::vector<std::int32_t>(a.tokens[k].begin(),
                                           stop == a.tokens[k].end() ? stop : stop + 1));
  }
}

TEST(Generation, BadRequestsAreInputErrors) {
  const ModelConfig m = generate_model();
  GenerateRequest r;
  EXPECT_THROW(check_request(r, m), InputError);  // empty prompt
  r.prompt = {1, 2};
  r.max_tokens = m.context - 1;  // 2 + 23 > 24
  EXPECT_THROW(check_request(r, m), InputError);
  r.max_tokens = m.context - 2;
  EXPECT_NO_THROW(check_request(r, m));
  r.max_tokens = 0;
  EXPECT_THROW(check_request(r, m), InputError);
  r.max_tokens = 4;
  r.samples = 0;
  EXPECT_THROW(check_request(r, m), InputError);
  r.samples = 1;
  r.prompt = {1, 300};
  EXPECT_THROW(check_request(r, m), InputError);
}

namespace {

MpiComm& world() {
  static MpiComm comm(MPI_COMM_WORLD, false);
  return comm;
}

struct ForestFixture {
  test::TempDir dir{"btm-generate"};
  Config config;
  explicit ForestFixture(const std::vector<std::string>& names)
      : config(test::make_generate_forest(dir / "corpus", dir / "run", names)) {}
};

Generated ensemble_generate(const Config& config, const std::vector<std::string>& names,
                            const std::vector<double>& prior, const GenerateRequest& r) {
  RunContext ctx = make_context(config, world(), test::backends());
  EvalGroups groups = make_eval_groups(ctx);
  EnsembleSpec spec;
  for (const std::string& n : names) spec.experts.push_back(checkpoint_file(ctx.run_dir, n));
  spec.prior = prior;
  return generate_from_ensemble(ctx, groups, spec, r);
}

}  // namespace

TEST(Generation, AnEnsembleOfOneExpertIsThatModel) {
  ForestFixture f({"d0", "d1"});
  GenerateRequest r;
  r.prompt = {104, 105, 32};
  r.max_tokens = 15;
  r.samples = 2;
  r.seed = 4;
  r.sampling.top_p = 0.9;
  const Generated ens = ensemble_generate(f.config, {"d1"}, {1.0}, r);
  auto e = make_cpu_engine(f.config.model, 1);
  e->set_params(load_checkpoint(checkpoint_file(f.dir / "run", "d1")).params);
  EXPECT_EQ(ens.tokens, generate_from_model(*e, r).tokens);
}

TEST(Generation, TheEnsembleMixesByThePosteriorOverTheTextSoFar) {
  ForestFixture f({"d0", "d1"});
  const std::vector<double> prior = {0.3, 0.7};
  GenerateRequest r;
  r.prompt = {110, 111, 112, 113};
  r.max_tokens = 8;
  r.sampling.temperature = 0;
  const Generated ens = ensemble_generate(f.config, {"d0", "d1"}, prior, r);
  // The reference: full forwards of both experts over the whole text, the posterior weights
  // log pi_j + sum of log p_j(x_t+1 | x_<=t) over the text, the mixture's argmax.
  std::vector<std::unique_ptr<Engine>> experts;
  for (const char* n : {"d0", "d1"}) {
    experts.push_back(make_cpu_engine(f.config.model, 1));
    experts.back()->set_params(load_checkpoint(checkpoint_file(f.dir / "run", n)).params);
  }
  const int V = f.config.model.vocab_size;
  const std::size_t Vp = static_cast<std::size_t>(f.config.model.padded_vocab());
  std::vector<std::int32_t> seq = r.prompt, want;
  for (int s = 0; s < r.max_tokens; ++s) {
    const int T = static_cast<int>(seq.size());
    std::vector<std::vector<double>> logp(2);  // [j][t * V + v]
    for (int j = 0; j < 2; ++j) {
      const auto logits = full_logits(*experts[static_cast<std::size_t>(j)], seq, 1, T);
      logp[static_cast<std::size_t>(j)].resize(static_cast<std::size_t>(T) * V);
      for (int t = 0; t < T; ++t) {
        const float* row = logits.data() + static_cast<std::size_t>(t) * Vp;
        double z = 0;
        for (int v = 0; v < V; ++v) z += std::exp(static_cast<double>(row[v]));
        for (int v = 0; v < V; ++v)
          logp[static_cast<std::size_t>(j)][static_cast<std::size_t>(t * V + v)] =
              row[v] - std::log(z);
      }
    }
    double w[2];
    for (int j = 0; j < 2; ++j) {
      w[j] = std::log(prior[static_cast<std::size_t>(j)]);
      for (int t = 0; t + 1 < T; ++t)
        w[j] += logp[static_cast<std::size_t>(j)]
                    [static_cast<std::size_t>(t * V + seq[static_cast<std::size_t>(t + 1)])];
    }
    const double norm = std::max(w[0], w[1]) + std::log(std::exp(w[0] - std::max(w[0], w[1])) +
                                                        std::exp(w[1] - std::max(w[0], w[1])));
    int best = 0;
    double best_p = -1;
    for (int v = 0; v < V; ++v) {
      double p = 0;
      for (int j = 0; j < 2; ++j)
        p += std::exp(w[j] - norm +
                      logp[static_cast<std::size_t>(j)][static_cast<std::size_t>((T - 1) * V + v)]);
      if (p > best_p) best_p = p, best = v;
    }
    want.push_back(best);
    seq.push_back(best);
  }
  ASSERT_EQ(ens.tokens.size(), 1u);
  EXPECT_EQ(ens.tokens[0], want);
}

// ---- btm generate ----------------------------------------------------------------------------

namespace {

std::string generate_args(const ForestFixture& f, const std::string& more) {
  return "generate --run.dir " + (f.dir / "run").string() + " --run.threads 1 " + more;
}

// btm with `input` on standard input and its standard output alone (the summary line on
// standard error left out).
test::CommandResult run_quiet(const std::string& args, const std::string& input = "") {
  return test::run_command("{ printf '" + input + "' | " + test::btm_binary() + " " + args +
                           " 2>/dev/null; }");
}

}  // namespace

TEST(GenerateCommand, PrintsTheTextAndIsDeterministicForASeed) {
  ForestFixture f({"d0", "d1"});
  const auto a =
      run_quiet(generate_args(f, "--model d0 --prompt 'ab' --max-tokens 6 --seed 3 --ignore-eot"));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  EXPECT_EQ(a.output.rfind("ab", 0), 0u) << a.output;  // the prompt, then the continuation
  const auto b =
      run_quiet(generate_args(f, "--model d0 --prompt 'ab' --max-tokens 6 --seed 3 --ignore-eot"));
  EXPECT_EQ(a.output, b.output);
  // jsonl: the ids, and greedy ids equal the engine's greedy generation.
  const auto j = run_quiet(generate_args(
      f, "--model d1 --prompt 'xy' --max-tokens 7 --temperature 0 --ignore-eot --format jsonl"));
  ASSERT_EQ(j.exit_code, 0) << j.output;
  std::istringstream lines(j.output);
  std::string line;
  std::getline(lines, line);
  const auto sample = nlohmann::json::parse(line);
  auto e = make_cpu_engine(f.config.model, 1);
  e->set_params(load_checkpoint(checkpoint_file(f.dir / "run", "d1")).params);
  EXPECT_EQ(sample["tokens"].get<std::vector<std::int32_t>>(),
            greedy_by_full_forward(*e, {'x', 'y'}, 7));
  std::getline(lines, line);
  EXPECT_TRUE(nlohmann::json::parse(line)["summary"].get<bool>());
  // The prompt from standard input; the ensemble and an average run too.
  const auto s = run_quiet(generate_args(f, "--ensemble --max-tokens 4 --batch 2"), "ab\\n");
  ASSERT_EQ(s.exit_code, 0) << s.output;
  EXPECT_NE(s.output.find("=== sample 1 ==="), std::string::npos) << s.output;
  const auto avg =
      run_quiet(generate_args(f, "--average --weights 1,3 --prompt ab --max-tokens 4"));
  EXPECT_EQ(avg.exit_code, 0) << avg.output;
}

TEST(GenerateCommand, BadInputIsAClearErrorWithExitCode2) {
  ForestFixture f({"d0", "d1"});
  const std::map<std::string, std::string> cases = {
      {"--model nope --prompt ab", "--model nope"},
      {"--model d0 --prompt ''", "prompt is empty"},
      {"--model d0 --prompt ab --max-tokens 23", "past model.context = 24"},
      {"--model d0 --prompt ab --top-p 0", "--top-p"},
      {"--model d0 --prompt ab --top-p 1.5", "--top-p"},
      {"--model d0 --prompt ab --temperature -1", "--temperature"},
      {"--prompt ab", "one of --model NAME, --average or --ensemble"},
      {"--model d0 --ensemble --prompt ab", "one of --model NAME"},
      {"--ensemble --prior d0 --prompt ab", "eval.h5"},
      {"--ensemble --experts 3 --prompt ab", "--experts 3"},
      {"--average --weights 1 --prompt ab", "--weights"},
      {"--model d0 --prompt ab --format xml", "--format xml"},
      {"--model d0 --experts 1 --prompt ab", "leave them out with --model"},
  };
  for (const auto& [args, words] : cases) {
    const auto r = test::run_btm(generate_args(f, args));
    EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find("btm: error:"), std::string::npos) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(words), std::string::npos) << args << "\n" << r.output;
  }
  const auto none = test::run_btm("generate --run.dir " + (f.dir / "nothing").string() +
                                  " --model d0 --prompt ab");
  EXPECT_EQ(none.exit_code, 2) << none.output;
}

// Tests of the BTM inference arithmetic (btm/ensemble.hpp) against brute-force references that
// multiply probabilities directly in long double, and against hand-computed examples.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "btm/method/ensemble.hpp"
#include "btm/util/error.hpp"

namespace btm::ensemble {
namespace {

using LogProbs = std::vector<std::vector<float>>;  // [elm][position]

const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

LogProbs random_log_probs(std::size_t elms, std::size_t tokens, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-6.0f, -0.05f);
  LogProbs out(elms, std::vector<float>(tokens));
  for (auto& row : out)
    for (float& x : row) x = dist(gen);
  return out;
}

// The posterior and the mixture computed the slow, obvious way: products of probabilities.
struct Reference {
  std::vector<long double> posterior;  // [n * K + j]
  std::vector<long double> mixture;    // log p(x_t | x_<t)
};

Reference brute_force(const LogProbs& logp, std::size_t T, const std::vector<double>& prior,
                      PosteriorForm form) {
  const std::size_t K = logp.size(), N = logp[0].size();
  Reference ref{std::vector<long double>(N * K), std::vector<long double>(N)};
  for (std::size_t n = 0; n < N; ++n) {
    const std::size_t t = n % T, block_start = n - t;
    std::vector<long double> numerator(K);
    long double denominator = 0;
    for (std::size_t j = 0; j < K; ++j) {
      long double likelihood = 1;
      if (form == PosteriorForm::prefix) {
        for (std::size_t s = block_start; s < n; ++s)
          likelihood *= std::exp((long double)logp[j][s]);
      } else if (t > 0) {
        likelihood = std::exp((long double)logp[j][n - 1]);
      }
      numerator[j] = prior[j] * likelihood;
      denominator += numerator[j];
    }
    long double mixture = 0;
    for (std::size_t j = 0; j < K; ++j) {
      ref.posterior[n * K + j] = numerator[j] / denominator;
      mixture += std::exp((long double)logp[j][n]) * ref.posterior[n * K + j];
    }
    ref.mixture[n] = std::log(mixture);
  }
  return ref;
}

void expect_matches_brute_force(PosteriorForm form, unsigned seed) {
  const std::size_t K = 3, T = 7, blocks = 3;
  const LogProbs logp = random_log_probs(K, T * blocks, seed);
  const std::vector<double> prior = {0.2, 0.5, 0.3};
  const LogProbView view = LogProbView::from_vectors(logp, T);
  const Reference ref = brute_force(logp, T, prior, form);

  const std::vector<double> log_post = log_posterior(view, prior, form);
  ASSERT_EQ(log_post.size(), T * blocks * K);
  for (std::size_t i = 0; i < log_post.size(); ++i)
    EXPECT_NEAR(std::exp(log_post[i]), (double)ref.posterior[i], 1e-12) << "entry " << i;

  const std::vector<double> mixture = mixture_log_likelihood(view, prior, form);
  ASSERT_EQ(mixture.size(), T * blocks);
  for (std::size_t n = 0; n < mixture.size(); ++n)
    EXPECT_NEAR(mixture[n], (double)ref.mixture[n], 1e-12 * std::abs((double)ref.mixture[n]))
        << "position " << n;

  // The posteriors differ from the prior after t = 0, so the test can tell the forms apart.
  EXPECT_GT(std::abs(std::exp(log_post[(T - 1) * K]) - prior[0]), 1e-3);
}

TEST(Ensemble, PrefixPosteriorAndMixtureMatchBruteForce) {
  expect_matches_brute_force(PosteriorForm::prefix, 11);
}

TEST(Ensemble, PrevTokenPosteriorAndMixtureMatchBruteForce) {
  expect_matches_brute_force(PosteriorForm::prev_token, 12);
}

TEST(Ensemble, PosteriorFormsDiffer) {
  const LogProbs logp = random_log_probs(2, 6, 5);
  const LogProbView view = LogProbView::from_vectors(logp, 6);
  const auto prefix = log_posterior(view, uniform(2), PosteriorForm::prefix);
  const auto prev = log_posterior(view, uniform(2), PosteriorForm::prev_token);
  EXPECT_DOUBLE_EQ(prefix[2], prev[2]);  // t = 1: both use the one token x_0
  EXPECT_GT(std::abs(prefix[5 * 2] - prev[5 * 2]), 1e-6);
}

TEST(Ensemble, UniformMixtureKeepsUniformWeightsAtEveryPosition) {
  const std::size_t K = 3, T = 5;
  const LogProbs logp = random_log_probs(K, 2 * T, 21);
  const auto mixture = uniform_mixture_log_likelihood(LogProbView::from_vectors(logp, T));
  for (std::size_t n = 0; n < 2 * T; ++n) {
    long double mean = 0;
    for (std::size_t j = 0; j < K; ++j) mean += std::exp((long double)logp[j][n]) / K;
    EXPECT_NEAR(mixture[n], (double)std::log(mean), 1e-12) << "position " << n;
  }
  // With a uniform prior, the posterior ensemble equals the uniform mixture only at t = 0.
  const auto posterior =
      mixture_log_likelihood(LogProbView::from_vectors(logp, T), uniform(K), PosteriorForm::prefix);
  EXPECT_NEAR(posterior[0], mixture[0], 1e-14);
  EXPECT_GT(std::abs(posterior[T - 1] - mixture[T - 1]), 1e-6);
}

TEST(Ensemble, EnsembleOfIdenticalElmsEqualsThatElm) {
  const std::size_t T = 16;
  const std::vector<float> one = random_log_probs(1, 4 * T, 3)[0];
  const LogProbs logp(4, one);
  const LogProbView view = LogProbView::from_vectors(logp, T);
  const double elm = elm_perplexity(view, 0);
  ASSERT_TRUE(std::isfinite(elm));
  ASSERT_GT(elm, 1.0);
  for (PosteriorForm form : {PosteriorForm::prefix, PosteriorForm::prev_token}) {
    const std::vector<double> skewed = {0.1, 0.6, 0.05, 0.25};
    EXPECT_NEAR(ensemble_perplexity(view, skewed, form) / elm, 1.0, 1e-12);
    EXPECT_NEAR(uniform_prior_perplexity(view, form) / elm, 1.0, 1e-12);
    const auto prior = cached_prior(view, {.batch_blocks = 2, .form = form});
    EXPECT_NEAR(ensemble_perplexity(view, prior, form) / elm, 1.0, 1e-12);
    for (std::size_t k = 1; k <= 4; ++k)
      EXPECT_NEAR(ensemble_perplexity(view, top_k(prior, k), form) / elm, 1.0, 1e-12);
  }
  EXPECT_NEAR(uniform_mixture_perplexity(view) / elm, 1.0, 1e-12);
}

TEST(Ensemble, TopOneWithOneHotPriorIsExactlyThatElm) {
  const std::size_t K = 3, T = 8;
  LogProbs logp = random_log_probs(K, 3 * T, 8);
  // ELM 2 is left out by the one-hot prior; its values must not be read at all.
  for (float& x : logp[2]) x = std::numeric_limits<float>::quiet_NaN();
  const LogProbView view = LogProbView::from_vectors(logp, T);
  const std::vector<double> prior = top_k(std::vector<double>{0.3, 0.45, 0.25}, 1);
  ASSERT_EQ(prior, (std::vector<double>{0.0, 1.0, 0.0}));
  for (PosteriorForm form : {PosteriorForm::prefix, PosteriorForm::prev_token}) {
    const auto mixture = mixture_log_likelihood(view, prior, form);
    for (std::size_t n = 0; n < mixture.size(); ++n)
      ASSERT_EQ(mixture[n], (double)logp[1][n]) << "position " << n;
    EXPECT_EQ(ensemble_perplexity(view, prior, form), elm_perplexity(view, 1));
  }
}

TEST(Ensemble, LogSumExpIsExactNearMinusTenThousand) {
  // Two ELMs, each block of 3 tokens scored -1e4 by ELM 0 and about -1e4 - log 3 by ELM 1:
  // exp() of either underflows to 0 in double, so only a max-shifted log-sum-exp survives.
  const float a = -1e4f, b = static_cast<float>(-1e4 - std::log(3.0));
  const LogProbs logp = {{a, a, a}, {b, b, b}};
  const LogProbView view = LogProbView::from_vectors(logp, 3);
  const double d = (double)b - (double)a;  // the float value of -log 3
  const double r = std::exp(d);            // p_1 / p_0, about 1/3

  // t = 0: the posterior is the uniform prior; p = (p_0 + p_1) / 2.
  const auto mixture = mixture_log_likelihood(view, uniform(2), PosteriorForm::prefix);
  const double expected0 = (double)a + std::log((1 + r) / 2);
  EXPECT_NEAR(mixture[0], expected0, 1e-12 * std::abs(expected0));
  // t = 1: the posterior is (1, r) / (1 + r); p = p_0 (1 + r^2) / (1 + r).
  const double expected1 = (double)a + std::log((1 + r * r) / (1 + r));
  EXPECT_NEAR(mixture[1], expected1, 1e-12 * std::abs(expected1));
  // t = 2: the prefix likelihoods are p_0^2 and p_1^2 (about e^-20000).
  const double expected2 = (double)a + std::log((1 + r * r * r) / (1 + r * r));
  EXPECT_NEAR(mixture[2], expected2, 1e-12 * std::abs(expected2));

  const auto log_post = log_posterior(view, uniform(2), PosteriorForm::prefix);
  EXPECT_NEAR(std::exp(log_post[2 * 2 + 1]), r * r / (1 + r * r), 1e-12);

  const auto flat = uniform_mixture_log_likelihood(view);
  EXPECT_NEAR(flat[2], expected0, 1e-12 * std::abs(expected0));
}

TEST(Ensemble, CachedPriorMatchesHandComputedExample) {
  // Two ELMs, blocks of 2 tokens, one block per batch, alpha = 0.3.
  // Block 0: ELM 0 gives 1/2 to each token, ELM 1 gives 1/4.
  // Block 1: at t = 0 ELM 0 gives 0.1 and ELM 1 gives 0.4 (the t = 1 values never matter).
  const float h = std::log(0.5f), q = std::log(0.25f);
  const LogProbs logp = {{h, h, std::log(0.1f), -1.0f}, {q, q, std::log(0.4f), -2.0f}};
  const LogProbView view = LogProbView::from_vectors(logp, 2);

  // Batch 1 with pi = (1/2, 1/2): t = 0 -> (1/2, 1/2); t = 1 -> (1/2, 1/4)/(3/4) = (2/3, 1/3).
  //   mean (7/12, 5/12); pi = 0.3 (7/12, 5/12) + 0.7 (1/2, 1/2) = (0.525, 0.475).
  // Batch 2: t = 0 -> (0.525, 0.475); t = 1 -> (0.0525, 0.19)/0.2425.
  //   mean = ((0.525 + 0.0525/0.2425)/2, (0.475 + 0.19/0.2425)/2); pi = 0.3 mean + 0.7 pi.
  const double m0 = (0.525 + 0.0525 / 0.2425) / 2, m1 = (0.475 + 0.19 / 0.2425) / 2;
  const std::vector<double> expected = {0.3 * m0 + 0.7 * 0.525, 0.3 * m1 + 0.7 * 0.475};
  // The float inputs are not exactly 0.1 and 0.4: 1e-7 covers that.
  for (PosteriorForm form : {PosteriorForm::prefix, PosteriorForm::prev_token}) {
    // (with T = 2 the prefix and the previous token are the same thing)
    const auto pi =
        cached_prior(view, {.batch_blocks = 1, .max_blocks = 100, .alpha = 0.3, .form = form});
    ASSERT_EQ(pi.size(), 2u);
    EXPECT_NEAR(pi[0], expected[0], 1e-7);
    EXPECT_NEAR(pi[1], expected[1], 1e-7);
    EXPECT_NEAR(pi[0] + pi[1], 1.0, 1e-15);
  }
  // max_blocks = 1: only the first batch.
  const auto first = cached_prior(view, {.batch_blocks = 1, .max_blocks = 1});
  EXPECT_NEAR(first[0], 0.525, 1e-7);
  EXPECT_NEAR(first[1], 0.475, 1e-7);
  // One batch of both blocks with the uniform prior: the block-1 posterior at t = 1 is then
  // (0.05, 0.2)/0.25 = (0.2, 0.8); mean over 4 positions ((1/2 + 2/3 + 1/2 + 0.2)/4, ...).
  const auto both = cached_prior(view, {.batch_blocks = 2});
  const double b0 = (0.5 + 2.0 / 3 + 0.5 + 0.2) / 4;
  EXPECT_NEAR(both[0], 0.3 * b0 + 0.7 * 0.5, 1e-7);
  EXPECT_NEAR(both[1], 0.3 * (1 - b0) + 0.7 * 0.5, 1e-7);
}

TEST(Ensemble, CachedPriorRejectsBadOptions) {
  const LogProbs logp = random_log_probs(2, 4, 1);
  const LogProbView view = LogProbView::from_vectors(logp, 2);
  EXPECT_THROW(cached_prior(view, {.batch_blocks = 0}), InputError);
  EXPECT_THROW(cached_prior(view, {.max_blocks = 0}), InputError);
  EXPECT_THROW(cached_prior(view, {.alpha = 0.0}), InputError);
  EXPECT_THROW(cached_prior(view, {.alpha = 1.5}), InputError);
  const std::vector<float> empty;
  EXPECT_THROW(cached_prior(LogProbView({empty, empty}, 2), {}), InputError);
}

TEST(Ensemble, ZeroPriorEntriesGiveZeroWeightAndNoNaN) {
  const std::size_t K = 3, T = 6;
  LogProbs logp = random_log_probs(K, 2 * T, 4);
  logp[0][3] = std::numeric_limits<float>::quiet_NaN();  // never read: pi_0 = 0
  const LogProbView view = LogProbView::from_vectors(logp, T);
  const std::vector<double> prior = {0.0, 0.4, 0.6};
  for (PosteriorForm form : {PosteriorForm::prefix, PosteriorForm::prev_token}) {
    const auto log_post = log_posterior(view, prior, form);
    for (std::size_t n = 0; n < 2 * T; ++n) {
      EXPECT_EQ(std::exp(log_post[n * K]), 0.0);
      EXPECT_FALSE(std::isnan(log_post[n * K + 1]));
      EXPECT_NEAR(std::exp(log_post[n * K + 1]) + std::exp(log_post[n * K + 2]), 1.0, 1e-14);
    }
    for (double x : mixture_log_likelihood(view, prior, form)) EXPECT_TRUE(std::isfinite(x));
    const auto mean = mean_posterior(view, prior, form);
    EXPECT_EQ(mean[0], 0.0);
    EXPECT_NEAR(mean[1] + mean[2], 1.0, 1e-14);
    EXPECT_TRUE(std::isfinite(ensemble_perplexity(view, prior, form)));
  }
}

TEST(Ensemble, ProbabilityZeroTokenGivesInfinitePerplexityNotNaN) {
  const float z = -std::numeric_limits<float>::infinity();
  const LogProbs logp = {{-1.0f, z, -1.0f, -2.0f}, {-2.0f, z, -1.0f, -1.0f}};
  const LogProbView view = LogProbView::from_vectors(logp, 4);
  const auto mixture = mixture_log_likelihood(view, uniform(2), PosteriorForm::prefix);
  EXPECT_EQ(mixture[1], -kInf);
  // After the impossible token the posterior falls back to the prior: p = mean of the two.
  EXPECT_NEAR(mixture[2], -1.0, 1e-14);
  EXPECT_NEAR(mixture[3], std::log((std::exp(-2.0) + std::exp(-1.0)) / 2), 1e-14);
  EXPECT_EQ(ensemble_perplexity(view, uniform(2), PosteriorForm::prefix), kInf);
}

TEST(Ensemble, NotANumberInAnElmThatTakesPartIsAnInputError) {
  LogProbs logp = random_log_probs(2, 4, 6);
  logp[1][2] = std::numeric_limits<float>::quiet_NaN();
  const LogProbView view = LogProbView::from_vectors(logp, 2);
  try {
    mixture_log_likelihood(view, uniform(2), PosteriorForm::prefix);
    FAIL() << "NaN log-probability accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("ELM 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("position 2"), std::string::npos) << e.what();
  }
}

TEST(Ensemble, ViewRejectsInconsistentShapes) {
  const std::vector<float> four(4, -1.0f), three(3, -1.0f);
  EXPECT_THROW(LogProbView({four, three}, 1), InputError);
  EXPECT_THROW(LogProbView({four, four}, 3), InputError);
  EXPECT_THROW(LogProbView({four}, 0), InputError);
  EXPECT_THROW(LogProbView({}, 2), InputError);
  const std::vector<float> matrix = {1, 2, 3, 4, 5, 6};
  const LogProbView view = LogProbView::from_matrix(matrix, 2, 3);
  EXPECT_EQ(view.elms(), 2u);
  EXPECT_EQ(view.blocks(), 1u);
  EXPECT_EQ(view(1, 0), 4.0f);
  EXPECT_THROW(LogProbView::from_matrix(matrix, 4, 1), InputError);
  EXPECT_THROW(view.block_range(1, 1), InputError);
  // A prior with the wrong length.
  EXPECT_THROW(log_posterior(view, uniform(3), PosteriorForm::prefix), InputError);
}

TEST(Ensemble, TopKKeepsTheLargestAndBreaksTiesByLowerIndex) {
  const std::vector<double> prior = {0.2, 0.3, 0.3, 0.2};
  EXPECT_EQ(top_k(prior, 1), (std::vector<double>{0, 1, 0, 0}));
  EXPECT_EQ(top_k(prior, 2), (std::vector<double>{0, 0.5, 0.5, 0}));
  const auto three = top_k(prior, 3);
  EXPECT_NEAR(three[0], 0.25, 1e-15);
  EXPECT_NEAR(three[1], 0.375, 1e-15);
  EXPECT_NEAR(three[2], 0.375, 1e-15);
  EXPECT_EQ(three[3], 0.0);
  EXPECT_EQ(top_k(prior, 4), prior);
  EXPECT_THROW(top_k(prior, 0), InputError);
  EXPECT_THROW(top_k(prior, 5), InputError);
  EXPECT_EQ(top_k(std::vector<double>{0.0, 1.0, 0.0}, 2), (std::vector<double>{0, 1, 0}));
  EXPECT_THROW(top_k(std::vector<double>{0.5, 0.6}, 1), InputError);  // not a distribution
}

TEST(Ensemble, PerplexityIsExpOfMinusMeanLogLikelihood) {
  const std::vector<double> ll = {std::log(0.5), std::log(0.25)};
  EXPECT_NEAR(perplexity(ll), std::sqrt(8.0), 1e-12);  // (1/2 * 1/4)^(-1/2)
  const std::vector<float> llf = {std::log(0.5f), std::log(0.5f)};
  EXPECT_NEAR(perplexity(llf), 2.0, 1e-6);
  EXPECT_THROW(perplexity(std::vector<double>{}), InputError);
}

TEST(Ensemble, ParsesPosteriorForms) {
  Posterior form = Posterior::prefix;
  parse_field("prev-token", form, "eval.posterior");
  EXPECT_EQ(form, PosteriorForm::prev_token);
  EXPECT_EQ(field_text(PosteriorForm::prev_token), "prev-token");
  try {
    parse_field("prev_token", form, "eval.posterior");
    FAIL() << "prev_token accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("use prefix or prev-token"), std::string::npos)
        << e.what();
  }
}

// ---------------------------------------------------------------------------------------------
// Averaging weights (the averages themselves: test_average.cpp).

TEST(Averaging, NormalisesUserWeights) {
  EXPECT_EQ(normalise_weights(std::vector<double>{2, 1, 1}),
            (std::vector<double>{0.5, 0.25, 0.25}));
  EXPECT_THROW(normalise_weights(std::vector<double>{1, -1}), InputError);
  EXPECT_THROW(normalise_weights(std::vector<double>{0, 0}), InputError);
  EXPECT_THROW(normalise_weights(std::vector<double>{}), InputError);
  EXPECT_THROW(normalise_weights(std::vector<double>{1, kInf}), InputError);
}

TEST(Averaging, WeightSchemes) {
  const std::vector<double> prior = {0.1, 0.4, 0.4, 0.1};
  EXPECT_EQ(average_weights(AverageScheme::uniform, prior),
            (std::vector<double>{0.25, 0.25, 0.25, 0.25}));
  EXPECT_EQ(average_weights(AverageScheme::cached_prior, prior), prior);
  EXPECT_EQ(average_weights(AverageScheme::argmax, prior), (std::vector<double>{0, 1, 0, 0}));
  EXPECT_EQ(average_scheme_name(AverageScheme::cached_prior), "cached-prior");
  EXPECT_THROW(average_weights(AverageScheme::argmax, std::vector<double>{0.5, 0.6}), InputError);
}

// Routing by per-position weights (c-BTM): at each position only the k largest weights take
// part, renormalised, and the mixture is the plain sum of probabilities.
TEST(Ensemble, RoutedMixtureKeepsEachPositionsTopKWeights) {
  const std::size_t K = 4, T = 3, N = 2 * T;
  const LogProbs logp = random_log_probs(K, N, 33);
  std::mt19937 gen(7);
  std::uniform_real_distribution<double> dist(0.01, 1.0);
  std::vector<double> weights(N * K);
  for (std::size_t n = 0; n < N; ++n) {
    double sum = 0;
    for (std::size_t j = 0; j < K; ++j) sum += (weights[n * K + j] = dist(gen));
    for (std::size_t j = 0; j < K; ++j) weights[n * K + j] /= sum;
  }
  const LogProbView view = LogProbView::from_vectors(logp, T);
  for (std::size_t k = 1; k <= K; ++k) {
    const std::vector<double> got = routed_log_likelihood(view, weights, k);
    for (std::size_t n = 0; n < N; ++n) {
      // The k largest by brute force: an entry is kept when fewer than k entries beat it.
      long double kept = 0, mixture = 0;
      for (std::size_t j = 0; j < K; ++j) {
        std::size_t beaten_by = 0;
        for (std::size_t i = 0; i < K; ++i) beaten_by += weights[n * K + i] > weights[n * K + j];
        if (beaten_by < k) {
          kept += weights[n * K + j];
          mixture += weights[n * K + j] * std::exp((long double)logp[j][n]);
        }
      }
      EXPECT_NEAR(got[n], (double)std::log(mixture / kept), 1e-12) << "k " << k << " n " << n;
    }
  }
  // Top-1 is the ELM of the largest weight alone.
  const std::vector<double> one = routed_log_likelihood(view, weights, 1);
  for (std::size_t n = 0; n < N; ++n) {
    std::size_t best = 0;
    for (std::size_t j = 1; j < K; ++j)
      if (weights[n * K + j] > weights[n * K + best]) best = j;
    EXPECT_NEAR(one[n], logp[best][n], 1e-6);
  }
  EXPECT_THROW(routed_log_likelihood(view, std::vector<double>(N * K - 1, 0.25), 1), InputError);
  EXPECT_THROW(routed_log_likelihood(view, std::vector<double>(N * K, 0.5), 1), InputError);
}

}  // namespace
}  // namespace btm::ensemble

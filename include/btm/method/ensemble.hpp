// ensemble.hpp: the arithmetic of BTM inference (Li et al. 2022, arXiv 2208.03306: ensembling
// ELMs with the domain posterior, and parameter averaging; the formulas are below):
// the per-token domain posterior over ELMs, the mixture log-likelihood, the cached prior (an EMA
// of mean posteriors on a validation split), top-k, perplexities, and parameter averaging with
// its weight schemes. Pure functions: no MPI, no HDF5, no I/O; the evaluation phase gathers the
// per-token log-probabilities and calls these.
//
// Notation. K ELMs, j = 0..K-1. The scored tokens form blocks of length T (the context); token
// position n = b*T + t, and every block starts a fresh prefix at t = 0. logp_j(n) is
// log p_j(x_t | x_<t) of ELM j. Inputs are float, all sums are double.
//
// Posterior over ELMs at position t of a block, in log space:
//   prefix (the paper):   log P(D=j | x_<t) = log pi_j + sum_{s<t} logp_j(s) - logsumexp_i(same)
//   prev-token (the reference code): the likelihood term is only logp_j(t-1).
//   At t = 0 both are the prior pi.
// Mixture: log p(x_t | x_<t) = logsumexp_j( logp_j(t) + log P(D=j | x_<t) ).
//
// ELMs with pi_j = 0 take no part at all: their weight is exactly 0 at every position and their
// log-probabilities are never read (so top-k evaluation need not compute them; they may be NaN).
// A log-probability of -inf (the ELM gave the token probability 0) is allowed; NaN or +inf in an
// ELM that takes part is an InputError naming the ELM and position. If every ELM that takes part
// gave probability 0 to the same token, the likelihood terms are all 0 and the posterior is
// undefined: it falls back to the prior (prefix form: for the rest of that block; prev-token: at
// the next position). The mixture log-likelihood of that token is -inf, so the perplexity is
// +inf either way.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "btm/config/config.hpp"

namespace btm::ensemble {

// Which likelihood term the posterior uses: eval.posterior (config.hpp), prefix or prev-token.
using PosteriorForm = Posterior;

// A read-only view of logp[j][n] for K ELMs on the same N = blocks * T tokens. It does not own
// the data: the arrays must outlive the view.
class LogProbView {
 public:
  // One span per ELM, all of the same length, a multiple of block_length (>= 1). InputError
  // otherwise.
  LogProbView(std::vector<std::span<const float>> per_elm, std::size_t block_length);
  // A row-major [elms, N] matrix (for instance the gathered arrays of all ELMs).
  static LogProbView from_matrix(std::span<const float> matrix, std::size_t elms,
                                 std::size_t block_length);
  // One vector per ELM.
  static LogProbView from_vectors(const std::vector<std::vector<float>>& per_elm,
                                  std::size_t block_length);

  std::size_t elms() const { return per_elm_.size(); }
  std::size_t tokens() const { return tokens_; }
  std::size_t block_length() const { return block_length_; }
  std::size_t blocks() const { return tokens_ / block_length_; }
  float operator()(std::size_t elm, std::size_t position) const { return per_elm_[elm][position]; }
  std::span<const float> elm(std::size_t j) const { return per_elm_[j]; }
  // The view of blocks [first, first + count) (InputError if out of range).
  LogProbView block_range(std::size_t first, std::size_t count) const;

 private:
  std::vector<std::span<const float>> per_elm_;
  std::size_t block_length_ = 1;
  std::size_t tokens_ = 0;
};

// The uniform distribution over K ELMs (K >= 1).
std::vector<double> uniform(std::size_t k);

// Checks that `weights` is a probability vector: non-empty, every entry finite and >= 0, sum 1
// within 1e-6. Throws InputError naming `what` and the weights otherwise.
void check_distribution(std::span<const double> weights, std::string_view what);

// log P(D=j | x_<t) for every position: row-major [N, K] (entry n*K + j); -inf where pi_j = 0.
// `prior` must pass check_distribution and have one entry per ELM.
std::vector<double> log_posterior(const LogProbView& logp, std::span<const double> prior,
                                  PosteriorForm form);

// Generation (eval/generate). The posterior for the token after the N tokens of `history` (one
// sequence: history(j, t) = logp_j(t) of its scored tokens, block_length N, or no token at
// all): log P(D=j | x_<=N), what position N of a block that holds `history` would get; -inf
// where pi_j = 0. With no token it is log pi.
std::vector<double> next_log_posterior(const LogProbView& history, std::span<const double> prior,
                                       PosteriorForm form);

// The mixture of the ELMs' next-token distributions under a posterior:
// out[v] = logsumexp_j(log_post[j] + logp[j][v]) over the ELMs with log_post[j] > -inf (the rows
// of the others are not read and may be empty). One log_post entry per row of logp.
std::vector<double> mixture_next_token(std::span<const double> log_post,
                                       const std::vector<std::span<const float>>& logp);

// The mixture log-likelihood log p(x_t | x_<t) of every position (N entries), with the
// posterior computed from `prior` (fixed: it is not updated along the way).
std::vector<double> mixture_log_likelihood(const LogProbView& logp, std::span<const double> prior,
                                           PosteriorForm form);

// The uniform mixture: weight 1/K for every ELM at every position, no posterior update:
// log p(x_t | x_<t) = logsumexp_j(logp_j(t)) - log K.
std::vector<double> uniform_mixture_log_likelihood(const LogProbView& logp);

// The mean of P(D=j | x_<t) over every position of `logp` (all t = 0..T-1 of every block,
// including t = 0 where it is the prior). K entries, sums to 1.
std::vector<double> mean_posterior(const LogProbView& logp, std::span<const double> prior,
                                   PosteriorForm form);

struct CachedPriorOptions {
  std::size_t batch_blocks = 8;  // blocks per EMA update (eval.prior_batch)
  std::size_t max_blocks = 100;  // validation blocks used at most (eval.prior_blocks)
  double alpha = 0.3;            // EMA weight of each batch's mean posterior (eval.prior_ema)
  PosteriorForm form = PosteriorForm::prefix;
};

// The cached prior of one evaluation domain from its validation blocks:
//   pi = uniform; for each batch of `batch_blocks` consecutive blocks among the first
//   min(max_blocks, blocks) (the last batch may be shorter):
//     post = mean_posterior(batch, pi)      -- over ALL positions t = 0..T-1 of the batch's
//                                              blocks, t = 0 included, with the CURRENT pi
//     pi  <- alpha * post + (1 - alpha) * pi
// Returns pi renormalised to sum 1. InputError if there is no block, batch_blocks or
// max_blocks is 0, or alpha is not in (0, 1].
std::vector<double> cached_prior(const LogProbView& validation, const CachedPriorOptions& options);

// Keeps the k largest entries of `prior` (ties: the lower index first), zeroes the others and
// renormalises. 1 <= k <= prior.size(), and the kept entries must not all be 0 (InputError).
std::vector<double> top_k(std::span<const double> prior, std::size_t k);

// Routing by weights given per position (c-BTM: method/cluster's route_blocks), row-major
// [N x K], each row a distribution over the ELMs. Top-k keeps each position's k largest weights
// (ties: the lower index), renormalised: log p(x_t | x_<t) = logsumexp_j(log w_j(t) + logp_j(t))
// over the kept ELMs (the others' log-probabilities are not read). InputError if the weights do
// not have N x K entries or a row is not a distribution.
std::vector<double> routed_log_likelihood(const LogProbView& logp, std::span<const double> weights,
                                          std::size_t k);
double routed_perplexity(const LogProbView& logp, std::span<const double> weights, std::size_t k);

// Perplexity exp(-mean log-likelihood) of per-token log-likelihoods (InputError when empty).
double perplexity(std::span<const double> log_likelihood);
double perplexity(std::span<const float> log_likelihood);

// Perplexity of ELM j alone.
double elm_perplexity(const LogProbView& logp, std::size_t elm);
// Perplexity of the posterior ensemble with a given fixed prior (for instance a cached prior of
// the domain, or its top-k): the prior is not updated on these (test) tokens.
double ensemble_perplexity(const LogProbView& logp, std::span<const double> prior,
                           PosteriorForm form);
// Perplexity of the uniform mixture (uniform weights at every position, no posterior).
double uniform_mixture_perplexity(const LogProbView& logp);
// Perplexity of the posterior ensemble with a uniform prior.
double uniform_prior_perplexity(const LogProbView& logp, PosteriorForm form);

// ---------------------------------------------------------------------------------------------
// Parameter averaging weights (the averages themselves: average.hpp).

// User-given weights (for instance --weights 2,1,1) scaled to sum 1. InputError for an empty
// list, a negative or non-finite weight, or all weights 0.
std::vector<double> normalise_weights(std::span<const double> weights);

// The averaging weight schemes of eval.h5 (/average_weights, attribute schemes).
enum class AverageScheme { uniform, cached_prior, argmax };
inline constexpr AverageScheme kAverageSchemes[] = {
    AverageScheme::uniform, AverageScheme::cached_prior, AverageScheme::argmax};
// "uniform" | "cached-prior" | "argmax"
std::string_view average_scheme_name(AverageScheme scheme);

// One-hot on the largest prior entry (ties: the lower index).
std::vector<double> argmax_weights(std::span<const double> prior);
// The weights of `scheme` for a domain whose cached prior is `prior` (a distribution over K):
// uniform(K), the prior itself (renormalised), or argmax_weights(prior).
std::vector<double> average_weights(AverageScheme scheme, std::span<const double> prior);

}  // namespace btm::ensemble

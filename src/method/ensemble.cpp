#include "btm/method/ensemble.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <sstream>
#include <utility>

#include "btm/util/error.hpp"

namespace btm::ensemble {

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr double kSumTolerance = 1e-6;

std::string format_list(std::span<const double> values) {
  std::ostringstream out;
  out.precision(8);
  out << "[";
  for (std::size_t i = 0; i < values.size(); ++i) out << (i ? ", " : "") << values[i];
  out << "]";
  return out.str();
}

// log(sum_j exp(x_j)) over the given indices; -inf when every term is -inf.
double logsumexp(const std::vector<double>& x, const std::vector<std::size_t>& indices) {
  double top = kNegInf;
  for (std::size_t j : indices) top = std::max(top, x[j]);
  if (top == kNegInf) return kNegInf;
  double sum = 0;
  for (std::size_t j : indices) sum += std::exp(x[j] - top);
  return top + std::log(sum);
}

void check_prior(const LogProbView& logp, std::span<const double> prior) {
  if (prior.size() != logp.elms())
    throw InputError("the ensemble prior has " + std::to_string(prior.size()) +
                     " entries but there are " + std::to_string(logp.elms()) +
                     " ELMs: give one prior weight per ELM");
  check_distribution(prior, "the ensemble prior");
}

// A log-probability of ELM j that takes part: -inf is a legal "probability 0", NaN and +inf are
// not log-probabilities at all.
double checked_logp(const LogProbView& logp, std::size_t j, std::size_t n) {
  const double x = logp(j, n);
  if (std::isnan(x) || x == std::numeric_limits<double>::infinity()) {
    const std::size_t T = logp.block_length();
    throw InputError("ELM " + std::to_string(j) + ": log-probability at token position " +
                     std::to_string(n) + " (block " + std::to_string(n / T) +
                     ", t = " + std::to_string(n % T) + ") is " + (std::isnan(x) ? "NaN" : "+inf") +
                     ": the ELM's outputs are not finite (diverged training or a corrupt "
                     "checkpoint?); retrain or drop this ELM");
  }
  return x;
}

// Walks every position n of `logp` in order and calls visit(n, log_post), where log_post[j] is
// log P(D=j | x_<t) (-inf for ELMs with prior 0), and `active` lists the ELMs with prior > 0;
// after each block's last position, block_end(log_post) gets the posterior of the position
// after it (what generation samples the next token with).
// `weight[j]` is the unnormalised log-posterior: log pi_j plus the likelihood term of the form.
template <typename Visit, typename BlockEnd>
void for_each_posterior(const LogProbView& logp, std::span<const double> prior, PosteriorForm form,
                        Visit&& visit, BlockEnd&& block_end) {
  check_prior(logp, prior);
  const std::size_t K = logp.elms(), T = logp.block_length();
  std::vector<std::size_t> active;
  std::vector<double> log_prior(K, kNegInf);
  for (std::size_t j = 0; j < K; ++j) {
    if (prior[j] > 0) {
      active.push_back(j);
      log_prior[j] = std::log(prior[j]);
    }
  }
  std::vector<double> weight(K, kNegInf), log_post(K, kNegInf);
  const auto normalise = [&] {
    const double norm = logsumexp(weight, active);
    for (std::size_t j : active) log_post[j] = norm == kNegInf ? log_prior[j] : weight[j] - norm;
  };
  for (std::size_t b = 0; b < logp.blocks(); ++b) {
    for (std::size_t j : active) weight[j] = log_prior[j];  // t = 0: the prior
    for (std::size_t t = 0; t < T; ++t) {
      const std::size_t n = b * T + t;
      normalise();
      visit(n, log_post, active);
      for (std::size_t j : active) {
        const double x = checked_logp(logp, j, n);
        weight[j] = form == PosteriorForm::prefix ? weight[j] + x : log_prior[j] + x;
      }
    }
    normalise();
    block_end(log_post);
  }
}

template <typename Visit>
void for_each_posterior(const LogProbView& logp, std::span<const double> prior, PosteriorForm form,
                        Visit&& visit) {
  for_each_posterior(logp, prior, form, std::forward<Visit>(visit),
                     [](const std::vector<double>&) {});
}

}  // namespace

LogProbView::LogProbView(std::vector<std::span<const float>> per_elm, std::size_t block_length)
    : per_elm_(std::move(per_elm)), block_length_(block_length) {
  if (per_elm_.empty()) throw InputError("per-token log-probabilities: no ELM given");
  if (block_length_ == 0) throw InputError("per-token log-probabilities: block length is 0");
  tokens_ = per_elm_[0].size();
  for (std::size_t j = 0; j < per_elm_.size(); ++j) {
    if (per_elm_[j].size() != tokens_)
      throw InputError("per-token log-probabilities: ELM " + std::to_string(j) + " has " +
                       std::to_string(per_elm_[j].size()) + " tokens, ELM 0 has " +
                       std::to_string(tokens_) + ": every ELM must score the same tokens");
  }
  if (tokens_ % block_length_ != 0)
    throw InputError("per-token log-probabilities: " + std::to_string(tokens_) +
                     " tokens are not whole blocks of " + std::to_string(block_length_));
}

LogProbView LogProbView::from_matrix(std::span<const float> matrix, std::size_t elms,
                                     std::size_t block_length) {
  if (elms == 0 || matrix.size() % elms != 0)
    throw InputError("per-token log-probabilities: a matrix of " + std::to_string(matrix.size()) +
                     " values is not " + std::to_string(elms) + " equal rows");
  const std::size_t n = matrix.size() / elms;
  std::vector<std::span<const float>> rows;
  for (std::size_t j = 0; j < elms; ++j) rows.push_back(matrix.subspan(j * n, n));
  return LogProbView(std::move(rows), block_length);
}

LogProbView LogProbView::from_vectors(const std::vector<std::vector<float>>& per_elm,
                                      std::size_t block_length) {
  std::vector<std::span<const float>> rows(per_elm.begin(), per_elm.end());
  return LogProbView(std::move(rows), block_length);
}

LogProbView LogProbView::block_range(std::size_t first, std::size_t count) const {
  if (count == 0 || first > blocks() || count > blocks() - first)
    throw InputError("blocks [" + std::to_string(first) + ", " + std::to_string(first + count) +
                     ") are not within the " + std::to_string(blocks()) + " blocks scored");
  std::vector<std::span<const float>> rows;
  for (const auto& row : per_elm_)
    rows.push_back(row.subspan(first * block_length_, count * block_length_));
  return LogProbView(std::move(rows), block_length_);
}

std::vector<double> uniform(std::size_t k) {
  if (k == 0) throw InputError("a uniform distribution over 0 ELMs: the forest has no ELM");
  return std::vector<double>(k, 1.0 / static_cast<double>(k));
}

void check_distribution(std::span<const double> weights, std::string_view what) {
  const std::string name(what);
  if (weights.empty()) throw InputError(name + " are empty: give one weight per ELM");
  double sum = 0;
  for (double w : weights) {
    if (!std::isfinite(w) || w < 0)
      throw InputError(name + " " + format_list(weights) +
                       " must be finite and >= 0: fix the weights");
    sum += w;
  }
  if (std::abs(sum - 1.0) > kSumTolerance) {
    std::ostringstream s;
    s.precision(10);
    s << sum;
    throw InputError(name + " " + format_list(weights) + " sum to " + s.str() +
                     ", not 1 (within 1e-6): normalise them");
  }
}

std::vector<double> log_posterior(const LogProbView& logp, std::span<const double> prior,
                                  PosteriorForm form) {
  const std::size_t K = logp.elms();
  std::vector<double> out(logp.tokens() * K, kNegInf);
  for_each_posterior(logp, prior, form,
                     [&](std::size_t n, const std::vector<double>& log_post,
                         const std::vector<std::size_t>& active) {
                       for (std::size_t j : active) out[n * K + j] = log_post[j];
                     });
  return out;
}

std::vector<double> next_log_posterior(const LogProbView& history, std::span<const double> prior,
                                       PosteriorForm form) {
  if (history.blocks() > 1)
    throw InputError("the next-token posterior is of one sequence, not of " +
                     std::to_string(history.blocks()) + " blocks");
  check_prior(history, prior);
  std::vector<double> out(prior.size(), kNegInf);
  for (std::size_t j = 0; j < prior.size(); ++j)
    if (prior[j] > 0) out[j] = std::log(prior[j]);  // no token yet: the prior
  for_each_posterior(
      history, prior, form,
      [](std::size_t, const std::vector<double>&, const std::vector<std::size_t>&) {},
      [&](const std::vector<double>& log_post) {
        for (std::size_t j = 0; j < prior.size(); ++j)
          if (prior[j] > 0) out[j] = log_post[j];
      });
  return out;
}

std::vector<double> mixture_next_token(std::span<const double> log_post,
                                       const std::vector<std::span<const float>>& logp) {
  if (log_post.size() != logp.size() || logp.empty())
    throw InputError("the next-token mixture has " + std::to_string(log_post.size()) +
                     " posterior weights for " + std::to_string(logp.size()) +
                     " ELMs: give one per ELM");
  std::vector<std::size_t> active;
  for (std::size_t j = 0; j < log_post.size(); ++j)
    if (log_post[j] != kNegInf) active.push_back(j);
  if (active.empty()) throw InputError("the next-token mixture has no ELM with a weight");
  const std::size_t V = logp[active[0]].size();
  for (std::size_t j : active)
    if (logp[j].size() != V)
      throw InputError("the next-token mixture: ELM " + std::to_string(j) + " gives " +
                       std::to_string(logp[j].size()) + " log-probabilities, ELM " +
                       std::to_string(active[0]) + " " + std::to_string(V));
  std::vector<double> out(V), joint(log_post.size(), kNegInf);
  for (std::size_t v = 0; v < V; ++v) {
    for (std::size_t j : active) joint[j] = log_post[j] + static_cast<double>(logp[j][v]);
    out[v] = logsumexp(joint, active);
  }
  return out;
}

std::vector<double> mixture_log_likelihood(const LogProbView& logp, std::span<const double> prior,
                                           PosteriorForm form) {
  std::vector<double> out(logp.tokens());
  std::vector<double> joint(logp.elms(), kNegInf);
  for_each_posterior(logp, prior, form,
                     [&](std::size_t n, const std::vector<double>& log_post,
                         const std::vector<std::size_t>& active) {
                       for (std::size_t j : active)
                         joint[j] = checked_logp(logp, j, n) + log_post[j];
                       out[n] = logsumexp(joint, active);
                     });
  return out;
}

std::vector<double> uniform_mixture_log_likelihood(const LogProbView& logp) {
  const std::size_t K = logp.elms();
  std::vector<std::size_t> all(K);
  std::iota(all.begin(), all.end(), std::size_t{0});
  const double log_k = std::log(static_cast<double>(K));
  std::vector<double> x(K), out(logp.tokens());
  for (std::size_t n = 0; n < logp.tokens(); ++n) {
    for (std::size_t j = 0; j < K; ++j) x[j] = checked_logp(logp, j, n);
    out[n] = logsumexp(x, all) - log_k;
  }
  return out;
}

std::vector<double> mean_posterior(const LogProbView& logp, std::span<const double> prior,
                                   PosteriorForm form) {
  std::vector<double> sum(logp.elms(), 0.0);
  for_each_posterior(logp, prior, form,
                     [&](std::size_t, const std::vector<double>& log_post,
                         const std::vector<std::size_t>& active) {
                       for (std::size_t j : active) sum[j] += std::exp(log_post[j]);
                     });
  for (double& s : sum) s /= static_cast<double>(logp.tokens());
  return sum;
}

std::vector<double> cached_prior(const LogProbView& validation, const CachedPriorOptions& options) {
  if (options.batch_blocks == 0) throw InputError("eval.prior_batch is 0: use at least 1 block");
  if (options.max_blocks == 0) throw InputError("eval.prior_blocks is 0: use at least 1 block");
  if (!(options.alpha > 0 && options.alpha <= 1))
    throw InputError("eval.prior_ema is " + std::to_string(options.alpha) +
                     ": use a value in (0, 1]");
  if (validation.blocks() == 0)
    throw InputError(
        "the cached prior needs validation blocks, and there are none: give the "
        "domain a validation split of at least one context length");
  const std::size_t used = std::min(options.max_blocks, validation.blocks());
  std::vector<double> pi = uniform(validation.elms());
  for (std::size_t first = 0; first < used; first += options.batch_blocks) {
    const std::size_t count = std::min(options.batch_blocks, used - first);
    const std::vector<double> post =
        mean_posterior(validation.block_range(first, count), pi, options.form);
    for (std::size_t j = 0; j < pi.size(); ++j)
      pi[j] = options.alpha * post[j] + (1.0 - options.alpha) * pi[j];
  }
  const double sum = std::accumulate(pi.begin(), pi.end(), 0.0);
  for (double& p : pi) p /= sum;
  return pi;
}

std::vector<double> top_k(std::span<const double> prior, std::size_t k) {
  check_distribution(prior, "the prior for top-k");
  if (k < 1 || k > prior.size())
    throw InputError("top-k with k = " + std::to_string(k) + " of " + std::to_string(prior.size()) +
                     " ELMs: use 1 <= k <= " + std::to_string(prior.size()));
  std::vector<std::size_t> order(prior.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return prior[a] > prior[b]; });
  std::vector<double> out(prior.size(), 0.0);
  double sum = 0;
  for (std::size_t i = 0; i < k; ++i) sum += prior[order[i]];
  if (!(sum > 0))
    throw InputError("the top-" + std::to_string(k) + " entries of the prior " +
                     format_list(prior) + " are all 0");
  for (std::size_t i = 0; i < k; ++i) out[order[i]] = prior[order[i]] / sum;
  return out;
}

std::vector<double> routed_log_likelihood(const LogProbView& logp, std::span<const double> weights,
                                          std::size_t k) {
  const std::size_t K = logp.elms(), N = logp.tokens();
  if (weights.size() != N * K)
    throw InputError("routing weights for " +
                     std::to_string(weights.size() / std::max<std::size_t>(K, 1)) +
                     " positions of " + std::to_string(K) + " ELMs, but " + std::to_string(N) +
                     " positions were scored");
  std::vector<double> out(N), joint(K);
  std::vector<std::size_t> active;
  for (std::size_t n = 0; n < N; ++n) {
    const std::vector<double> w = top_k(weights.subspan(n * K, K), k);
    active.clear();
    for (std::size_t j = 0; j < K; ++j)
      if (w[j] > 0) {
        active.push_back(j);
        joint[j] = std::log(w[j]) + checked_logp(logp, j, n);
      }
    out[n] = logsumexp(joint, active);
  }
  return out;
}

double routed_perplexity(const LogProbView& logp, std::span<const double> weights, std::size_t k) {
  return perplexity(routed_log_likelihood(logp, weights, k));
}

double perplexity(std::span<const double> log_likelihood) {
  if (log_likelihood.empty()) throw InputError("perplexity of 0 tokens: nothing was scored");
  double sum = 0;
  for (double x : log_likelihood) sum += x;
  return std::exp(-sum / static_cast<double>(log_likelihood.size()));
}

double perplexity(std::span<const float> log_likelihood) {
  if (log_likelihood.empty()) throw InputError("perplexity of 0 tokens: nothing was scored");
  double sum = 0;
  for (float x : log_likelihood) sum += x;
  return std::exp(-sum / static_cast<double>(log_likelihood.size()));
}

double elm_perplexity(const LogProbView& logp, std::size_t elm) {
  if (elm >= logp.elms())
    throw InputError("ELM index " + std::to_string(elm) + " is not one of the " +
                     std::to_string(logp.elms()) + " ELMs scored");
  return perplexity(logp.elm(elm));
}

double ensemble_perplexity(const LogProbView& logp, std::span<const double> prior,
                           PosteriorForm form) {
  return perplexity(mixture_log_likelihood(logp, prior, form));
}

double uniform_mixture_perplexity(const LogProbView& logp) {
  return perplexity(uniform_mixture_log_likelihood(logp));
}

double uniform_prior_perplexity(const LogProbView& logp, PosteriorForm form) {
  return ensemble_perplexity(logp, uniform(logp.elms()), form);
}

std::vector<double> normalise_weights(std::span<const double> weights) {
  if (weights.empty()) throw InputError("weights: the list is empty; give one weight per ELM");
  double sum = 0;
  for (double w : weights) {
    if (!std::isfinite(w) || w < 0)
      throw InputError("weights " + format_list(weights) +
                       ": every weight must be a finite number >= 0");
    sum += w;
  }
  if (!(sum > 0)) throw InputError("weights " + format_list(weights) + " are all 0");
  std::vector<double> out(weights.begin(), weights.end());
  for (double& w : out) w /= sum;
  return out;
}

std::string_view average_scheme_name(AverageScheme scheme) {
  switch (scheme) {
    case AverageScheme::uniform:
      return "uniform";
    case AverageScheme::cached_prior:
      return "cached-prior";
    case AverageScheme::argmax:
      return "argmax";
  }
  return "unknown";
}

std::vector<double> argmax_weights(std::span<const double> prior) {
  check_distribution(prior, "the prior for argmax weights");
  const auto best = std::max_element(prior.begin(), prior.end());  // the first of equal maxima
  std::vector<double> out(prior.size(), 0.0);
  out[static_cast<std::size_t>(best - prior.begin())] = 1.0;
  return out;
}

std::vector<double> average_weights(AverageScheme scheme, std::span<const double> prior) {
  check_distribution(prior, "the cached prior");
  switch (scheme) {
    case AverageScheme::uniform:
      return uniform(prior.size());
    case AverageScheme::cached_prior:
      return normalise_weights(prior);
    case AverageScheme::argmax:
      return argmax_weights(prior);
  }
  throw InputError("unknown averaging scheme");
}

}  // namespace btm::ensemble

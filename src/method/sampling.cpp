#include "btm/method/sampling.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "btm/util/error.hpp"

namespace btm::sampling {

void check(const Options& options) {
  if (!std::isfinite(options.temperature) || options.temperature < 0)
    throw InputError("--temperature " + std::to_string(options.temperature) +
                     ": use a finite value >= 0 (0: greedy, 1: the model's distribution)");
  if (options.top_k < 0)
    throw InputError("--top-k " + std::to_string(options.top_k) +
                     ": use k >= 0 (0: no top-k filter, 1: greedy)");
  if (!(options.top_p > 0 && options.top_p <= 1))
    throw InputError("--top-p " + std::to_string(options.top_p) +
                     ": use a value in (0, 1] (1: no nucleus filter)");
}

std::vector<double> log_softmax(std::span<const float> logits) {
  std::vector<double> out(logits.size());
  double top = -std::numeric_limits<double>::infinity();
  for (float x : logits) top = std::max(top, static_cast<double>(x));
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - top);
  const double norm = top + std::log(sum);
  for (std::size_t i = 0; i < logits.size(); ++i) out[i] = static_cast<double>(logits[i]) - norm;
  return out;
}

int sample(std::span<const double> logp, const Options& options, Rng& rng) {
  const std::size_t V = logp.size();
  if (V == 0) throw InputError("sampling from an empty distribution");
  // Larger first, the lower id among equals: a total order, so the result is deterministic.
  const auto before = [&](std::size_t a, std::size_t b) {
    return logp[a] > logp[b] || (logp[a] == logp[b] && a < b);
  };
  if (options.temperature == 0 || options.top_k == 1) {
    std::size_t best = 0;
    for (std::size_t i = 1; i < V; ++i)
      if (before(i, best)) best = i;
    return static_cast<int>(best);
  }
  const double inv_t = 1.0 / options.temperature;
  if ((options.top_k == 0 || static_cast<std::size_t>(options.top_k) >= V) && options.top_p >= 1) {
    // Nothing filtered: the general path's arithmetic (the same order) without its buffers.
    double top = -std::numeric_limits<double>::infinity();
    for (double x : logp) top = std::max(top, x);
    double total = 0;
    for (double x : logp) total += std::exp((x - top) * inv_t);
    const double u = rng.uniform() * total;
    double cumulative = 0;
    int last = -1;
    for (std::size_t i = 0; i < V; ++i) {
      const double w = std::exp((logp[i] - top) * inv_t);
      if (w <= 0) continue;
      cumulative += w;
      last = static_cast<int>(i);
      if (u < cumulative) return last;
    }
    return last;
  }
  std::vector<std::size_t> ids(V);
  std::iota(ids.begin(), ids.end(), std::size_t{0});
  std::size_t kept = V;
  if (options.top_k > 0 && static_cast<std::size_t>(options.top_k) < V) {
    kept = static_cast<std::size_t>(options.top_k);
    std::nth_element(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(kept - 1), ids.end(),
                     before);
  }
  const double top =
      logp[*std::min_element(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(kept), before)];
  std::vector<double> w(V, 0.0);  // unnormalised probabilities of the kept ids
  double total = 0;
  for (std::size_t i = 0; i < kept; ++i) {
    w[ids[i]] = std::exp((logp[ids[i]] - top) * inv_t);
    total += w[ids[i]];
  }
  if (options.top_p < 1) {
    // The nucleus: the largest first until their share reaches top_p. Sorting only a prefix of
    // candidates (doubled until it holds the nucleus) keeps this cheap on 50k ids.
    std::size_t m = std::min<std::size_t>(kept, 256);
    while (true) {
      std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(m),
                        ids.begin() + static_cast<std::ptrdiff_t>(kept), before);
      double cumulative = 0;
      std::size_t i = 0;
      while (i < m && cumulative < options.top_p * total) cumulative += w[ids[i++]];
      if (cumulative >= options.top_p * total || m == kept) {
        for (std::size_t r = i; r < kept; ++r) w[ids[r]] = 0;
        kept = i;
        total = cumulative;
        break;
      }
      m = std::min(kept, 2 * m);
    }
  }
  // One uniform number, walked over the kept ids in id order.
  const double u = rng.uniform() * total;
  double cumulative = 0;
  int last = -1;
  for (std::size_t i = 0; i < V; ++i) {
    if (w[i] <= 0) continue;
    cumulative += w[i];
    last = static_cast<int>(i);
    if (u < cumulative) return last;
  }
  return last;  // u rounded to the total: the last kept id
}

Rng sample_rng(std::uint64_t seed, int sample) {
  return Rng(mix64(seed ^ mix64(static_cast<std::uint64_t>(sample) + 0x5eed)));
}

}  // namespace btm::sampling

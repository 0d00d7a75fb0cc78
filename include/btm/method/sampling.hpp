// sampling.hpp: choosing the next token of generated text from a next-token distribution:
// temperature, top-k and top-p (nucleus) filtering, and the draw from a seeded Rng (util/rng),
// so a seed gives the same text on every platform. Pure functions: no engine, no MPI.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "btm/util/rng.hpp"

namespace btm::sampling {

struct Options {
  double temperature = 1.0;  // 0: greedy (the most likely token)
  int top_k = 0;             // keep the k most likely tokens (0: all)
  double top_p = 1.0;        // keep the most likely tokens whose probabilities reach p (1: all)
};

// InputError naming the option (--temperature, --top-k, --top-p) and its valid range: the
// temperature finite and >= 0, top_k >= 0, top_p in (0, 1].
void check(const Options& options);

// log softmax(logits[0..V)) in double.
std::vector<double> log_softmax(std::span<const float> logits);

// The token drawn from the distribution whose log-probabilities are `logp` (V entries; -inf
// allowed, at least one finite): greedy (temperature 0 or top_k 1: the largest entry, the lowest
// id among equals) uses no random number; otherwise the log-probabilities are divided by the
// temperature, only the top_k largest are kept, then the smallest set of the largest whose
// probabilities sum to at least top_p (ties: lower ids first), and one uniform number of `rng`
// picks a token of what is left by its renormalised probability.
int sample(std::span<const double> logp, const Options& options, Rng& rng);

// The Rng of sample b of a generation seeded `seed`: independent streams per sample.
Rng sample_rng(std::uint64_t seed, int sample);

}  // namespace btm::sampling

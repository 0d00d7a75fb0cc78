// sampler.hpp: deterministic, resumable batches. A token array is cut into non-overlapping
// windows of T+1 tokens (inputs and targets shifted by one); each epoch visits every window
// once in a seeded pseudo-random order (a Feistel permutation: O(1) memory at any corpus size).
// Global sample i of a multi-domain source comes from domain i % K (domain-balanced). The whole
// state is one integer, the number of samples drawn, so it goes into the checkpoint and does
// not depend on the rank count: rank k of r takes samples [pos + k*b, pos + (k+1)*b).
#pragma once

#include <cstdint>
#include <vector>

#include "btm/data/corpus.hpp"

namespace btm {

// A seeded bijection of [0, n).
class Permutation {
 public:
  Permutation(std::uint64_t n, std::uint64_t seed);
  std::uint64_t operator()(std::uint64_t i) const;
  std::uint64_t size() const { return n_; }

 private:
  std::uint64_t n_, half_bits_, half_mask_;
  std::uint64_t keys_[4];
};

class BatchSampler {
 public:
  // `sources` must outlive the sampler; each needs at least T+1 tokens (InputError otherwise,
  // naming `names[k]`).
  BatchSampler(std::vector<const TokenArray*> sources, std::vector<std::string> names, int T,
               std::uint64_t seed);
  // Writes sample `index` (T inputs, T targets).
  void sample(std::uint64_t index, std::int32_t* inputs, std::int32_t* targets) const;
  // Writes `count` consecutive samples starting at `first` into [count, T] arrays.
  void fill(std::uint64_t first, int count, std::int32_t* inputs, std::int32_t* targets) const;
  int T() const { return T_; }

 private:
  std::vector<const TokenArray*> sources_;
  int T_;
  std::uint64_t seed_;
  std::vector<std::uint64_t> windows_;  // per source
};

}  // namespace btm

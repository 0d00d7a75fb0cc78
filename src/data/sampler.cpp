#include "btm/data/sampler.hpp"

#include "btm/util/error.hpp"
#include "btm/util/rng.hpp"

namespace btm {

Permutation::Permutation(std::uint64_t n, std::uint64_t seed) : n_(n) {
  int bits = 1;
  while (bits < 64 && (std::uint64_t{1} << bits) < n) ++bits;
  half_bits_ = static_cast<std::uint64_t>((bits + 1) / 2);
  half_mask_ = (std::uint64_t{1} << half_bits_) - 1;
  for (int r = 0; r < 4; ++r) keys_[r] = mix64(seed * 4 + static_cast<std::uint64_t>(r) + 1);
}

std::uint64_t Permutation::operator()(std::uint64_t i) const {
  // A 4-round Feistel network on 2*half_bits bits is a bijection; cycle-walking restricts it to
  // [0, n) (the domain is < 4n, so this takes a few rounds on average).
  std::uint64_t x = i;
  do {
    std::uint64_t left = x >> half_bits_, right = x & half_mask_;
    for (std::uint64_t key : keys_) {
      const std::uint64_t next = left ^ (mix64(right ^ key) & half_mask_);
      left = right;
      right = next;
    }
    x = (left << half_bits_) | right;
  } while (x >= n_);
  return x;
}

BatchSampler::BatchSampler(std::vector<const TokenArray*> sources, std::vector<std::string> names,
                           int T, std::uint64_t seed)
    : sources_(std::move(sources)), T_(T), seed_(seed) {
  if (sources_.empty()) throw InputError("no training data: the sampler needs at least one domain");
  for (std::size_t k = 0; k < sources_.size(); ++k) {
    const std::size_t n = sources_[k]->size();
    if (n < static_cast<std::size_t>(T) + 1)
      throw InputError("domain '" + (k < names.size() ? names[k] : std::to_string(k)) + "' has " +
                       std::to_string(n) +
                       " training tokens, fewer than one block of context + 1 = " +
                       std::to_string(T + 1) + ": add text or lower model.context");
    windows_.push_back((n - 1) / static_cast<std::size_t>(T));
  }
}

void BatchSampler::sample(std::uint64_t index, std::int32_t* inputs, std::int32_t* targets) const {
  const std::uint64_t K = sources_.size();
  const std::uint64_t source = index % K;
  const std::uint64_t local = index / K;
  const std::uint64_t windows = windows_[source];
  const std::uint64_t epoch = local / windows;
  // Each (source, epoch) has its own order.
  const Permutation order(windows, mix64(seed_ ^ mix64(source * 0x10001 + epoch)));
  const std::size_t start =
      static_cast<std::size_t>(order(local % windows)) * static_cast<std::size_t>(T_);
  const std::uint16_t* tokens = sources_[source]->data() + start;
  for (int t = 0; t < T_; ++t) {
    inputs[t] = tokens[t];
    targets[t] = tokens[t + 1];
  }
}

void BatchSampler::fill(std::uint64_t first, int count, std::int32_t* inputs,
                        std::int32_t* targets) const {
  for (int b = 0; b < count; ++b)
    sample(first + static_cast<std::uint64_t>(b), inputs + static_cast<std::size_t>(b) * T_,
           targets + static_cast<std::size_t>(b) * T_);
}

}  // namespace btm

// fixed_point.hpp: exact sums of float vectors in 64-bit fixed point (40 fraction bits).
// Integer addition is associative, so a sum formed this way has the same bits in any order and
// over any split across ranks. btm uses it for
//   - the gradient of an optimizer step of several micro-batches: the step is bitwise the same
//     whether its micro-batches ran on 1 rank with accumulation or on many ranks;
//   - parameter averages: sum_j w_j theta_j is the same bits wherever and in whichever order the
//     parents are added (branch, btm average and btm eval share it).
// A term w * x becomes round(w * x * 2^40) (double arithmetic, round to nearest even); the sum
// is converted back with one multiplication by 2^-40 / divisor. The resolution is 2^-40
// (9.1e-13), the range |sum| < 2^23: a sum of k terms accepts terms |w x| < 2^23 / k
// (term_limit), so it cannot overflow. The CUDA kernels (cuda/kernels.hpp) do the same arithmetic,
// so a device result equals the host's bit for bit.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

namespace btm::fixed {

constexpr int kFractionBits = 40;
constexpr double kScale = 1099511627776.0;  // 2^40
// Terms below this |term| (exclusive) keep a sum of `terms` terms in int64: 2^63 / 2^40 / terms.
inline double term_limit(std::int64_t terms) {
  return 8388608.0 / static_cast<double>(terms < 1 ? 1 : terms);  // 2^23 / terms
}

// One term in fixed point; the caller has checked |weight * x| <= its term limit.
inline std::int64_t to_fixed(float x, double weight) {
  return std::llrint(static_cast<double>(x) * weight * kScale);
}
// The sum back as a float: one rounding of sum * 2^-40 / divisor (factor = 1 / (2^40 divisor)).
inline double factor_for(double divisor) {
  return 1.0 / (kScale * divisor);
}
inline float to_float(std::int64_t sum, double factor) {
  return static_cast<float>(static_cast<double>(sum) * factor);
}

// acc[i] += to_fixed(x[i], weight) for every i (OpenMP threads over i). Returns the number of
// terms that were not finite or not below `limit` in magnitude; those are not added.
std::int64_t accumulate(std::span<std::int64_t> acc, std::span<const float> x, double weight,
                        double limit);
// out[i] = to_float(acc[i], factor_for(divisor)).
void to_floats(std::span<const std::int64_t> acc, std::span<float> out, double divisor);

// A streamed weighted sum of vectors of one length: add the parents one at a time (each can be
// freed after its add), then read the result. `bad` counts rejected terms.
class Sum {
 public:
  explicit Sum(std::size_t n, double limit = term_limit(1)) : acc_(n, 0), limit_(limit) {}
  // A sum for the average with these weights: terms below term_limit(number of non-zero
  // weights), so the average cannot overflow.
  static Sum for_weights(std::size_t n, std::span<const double> weights) {
    std::int64_t terms = 0;
    for (double w : weights) terms += w != 0;
    return Sum(n, term_limit(terms));
  }
  void add(std::span<const float> x, double weight = 1.0) {
    bad_ += accumulate(acc_, x, weight, limit_);
  }
  std::vector<float> result(double divisor = 1.0) const {
    std::vector<float> out(acc_.size());
    to_floats(acc_, out, divisor);
    return out;
  }
  std::span<std::int64_t> raw() { return acc_; }
  std::span<const std::int64_t> raw() const { return acc_; }
  double limit() const { return limit_; }
  std::int64_t bad() const { return bad_; }
  // Terms rejected by a sum formed elsewhere (a device kernel) and added into raw().
  void add_rejected(std::int64_t count) { bad_ += count; }

 private:
  std::vector<std::int64_t> acc_;
  double limit_;
  std::int64_t bad_ = 0;
};

}  // namespace btm::fixed

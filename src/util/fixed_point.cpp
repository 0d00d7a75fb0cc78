#include "btm/util/fixed_point.hpp"

#include <stdexcept>

namespace btm::fixed {

std::int64_t accumulate(std::span<std::int64_t> acc, std::span<const float> x, double weight,
                        double limit) {
  if (acc.size() != x.size())
    throw std::invalid_argument("fixed::accumulate: the vectors differ in length");
  const std::size_t n = x.size();
  std::int64_t bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad)
  for (std::size_t i = 0; i < n; ++i) {
    const double term = static_cast<double>(x[i]) * weight;
    if (!(std::abs(term) < limit)) {  // also true for NaN
      ++bad;
      continue;
    }
    acc[i] += std::llrint(term * kScale);
  }
  return bad;
}

void to_floats(std::span<const std::int64_t> acc, std::span<float> out, double divisor) {
  if (acc.size() != out.size())
    throw std::invalid_argument("fixed::to_floats: the vectors differ in length");
  const double factor = factor_for(divisor);
  const std::size_t n = acc.size();
#pragma omp parallel for schedule(static)
  for (std::size_t i = 0; i < n; ++i) out[i] = to_float(acc[i], factor);
}

}  // namespace btm::fixed

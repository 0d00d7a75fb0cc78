// reductions.cpp: the sum of squares (cpu/kernels/reductions.hpp) in double, over fixed-size
// chunks summed in chunk order: the same result for any thread count.
#include <algorithm>
#include <cstddef>
#include <vector>

#include "btm/cpu/kernels/reductions.hpp"
#include "common.hpp"

namespace btm::cpu {

double sum_of_squares(const float* g, std::size_t n) {
  // Fixed-size chunks summed in chunk order: the same result for any thread count.
  constexpr size_t kChunk = 1 << 15;
  const size_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(chunks, 0.0);
#pragma omp parallel for schedule(static)
  for (size_t k = 0; k < chunks; ++k) {
    double s = 0;
    const size_t end = std::min(n, (k + 1) * kChunk);
    for (size_t i = k * kChunk; i < end; ++i) s += static_cast<double>(g[i]) * g[i];
    partial[k] = s;
  }
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

}  // namespace btm::cpu

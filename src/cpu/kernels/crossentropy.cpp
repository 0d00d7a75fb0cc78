// crossentropy.cpp: the fp32 reference softmax and cross-entropy
// (cpu/kernels/crossentropy.hpp), one row per iteration, the sum of exponentials in double.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "btm/cpu/kernels/crossentropy.hpp"
#include "common.hpp"

namespace btm::cpu {

void crossentropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                   const std::int32_t* targets, int N, int V, int Vp, float dloss) {
  const size_t Vs = static_cast<size_t>(V), Vps = static_cast<size_t>(Vp);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < N; ++i) {
    const float* row = logits + static_cast<size_t>(i) * Vps;
    float* drow = dlogits != nullptr ? dlogits + static_cast<size_t>(i) * Vps : nullptr;
    const float max = *std::max_element(row, row + Vs);
    const size_t target = static_cast<size_t>(targets[i]);
    // Read before dlogits (which may alias the row) is written.
    const float target_logit = row[target];
    double sum = 0;
    if (drow == nullptr) {
      for (size_t j = 0; j < Vs; ++j) sum += std::exp(row[j] - max);
    } else {
      for (size_t j = 0; j < Vs; ++j) {
        const float e = std::exp(row[j] - max);
        sum += e;
        drow[j] = e;  // kept for the gradient below: one exp per logit
      }
    }
    losses[i] = static_cast<float>(std::log(sum) - (target_logit - max));
    if (drow == nullptr) continue;
    const float inv_sum = static_cast<float>(1.0 / sum);
    for (size_t j = 0; j < Vs; ++j)
      drow[j] = (drow[j] * inv_sum - (j == target ? 1.0f : 0.0f)) * dloss;
    std::fill(drow + Vs, drow + Vps, 0.0f);
  }
}

}  // namespace btm::cpu

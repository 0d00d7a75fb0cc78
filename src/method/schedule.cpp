#include "btm/method/schedule.hpp"

#include <algorithm>
#include <cmath>

namespace btm {

double learning_rate(const OptimConfig& optim, std::int64_t step, std::int64_t total_steps) {
  const std::int64_t warmup = static_cast<std::int64_t>(
      std::ceil(optim.warmup_fraction * static_cast<double>(total_steps)));
  const double floor = optim.lr * optim.min_lr_ratio;
  if (step < warmup) return optim.lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const std::int64_t decay_steps = total_steps - warmup;
  if (decay_steps <= 1) return optim.lr;
  const double progress = std::clamp(
      static_cast<double>(step - warmup) / static_cast<double>(decay_steps - 1), 0.0, 1.0);
  const double shape =
      optim.decay == Decay::cosine ? 0.5 * (1.0 + std::cos(M_PI * progress)) : 1.0 - progress;
  return floor + (optim.lr - floor) * shape;
}

}  // namespace btm

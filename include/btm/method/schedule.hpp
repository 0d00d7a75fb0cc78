// schedule.hpp: the learning-rate schedule: linear warmup, then linear or cosine decay to a floor.
#pragma once

#include <cstdint>

#include "btm/config/config.hpp"

namespace btm {

// Learning rate for the update at 0-based `step` of a schedule of `total_steps` updates:
// warmup over ceil(warmup_fraction * total) steps from lr/warmup to lr, then decay from lr to
// lr * min_lr_ratio at the last step.
double learning_rate(const OptimConfig& optim, std::int64_t step, std::int64_t total_steps);

}  // namespace btm

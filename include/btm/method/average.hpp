// average.hpp: parameter averages of checkpoints, theta = sum_j w_j theta_j. Every average in btm
// (branching a new domain, btm average, the evaluation's averages, the bench) sums its terms in
// fixed point (fixed_point.hpp), so the same parents and weights give the same bits wherever,
// in whatever order and over whatever ranks the sum is formed: a uniform branch equals eval's
// average:uniform. Parents are read one at a time; K models are never in memory together.
#pragma once

#include <filesystem>
#include <span>
#include <vector>

#include "btm/config/config.hpp"
#include "btm/io/checkpoint.hpp"

namespace btm {

// The weighted average of the checkpoints `parents` (weights must pass
// ensemble::check_distribution, one per parent; each parent must have the shape `model`):
// params, and with `with_optimizer` the AdamW moments averaged with the same weights. tokens is
// the weighted sum of the parents' tokens (rounded), domains the parents' domains in order;
// every other field is the first parent's. InputError naming the file for a bad parent.
// The attributes of the average of `parents` (no vectors), as average_checkpoints describes
// them, after checking the weights and each parent's shape.
Checkpoint averaged_attributes(const std::vector<std::filesystem::path>& parents,
                               std::span<const double> weights, const ModelConfig& model);

Checkpoint average_checkpoints(const std::vector<std::filesystem::path>& parents,
                               std::span<const double> weights, const ModelConfig& model,
                               bool with_optimizer);

}  // namespace btm

// score.hpp: the per-token log-probabilities of the evaluation, computed over the groups and
// gathered on world rank 0: of models (checkpoints) on block sets, and of the parameter averages
// on the test blocks that use them. Only these arrays travel, never weights. Every number comes
// from the same computation whatever the rank count: chunk c of a block set is scored by group
// rank c % size, each entry by one rank, and the gather is a sum over zeros elsewhere.
#pragma once

#include <cstddef>
#include <filesystem>
#include <vector>

#include "btm/eval/groups.hpp"
#include "btm/eval/plan.hpp"
#include "btm/model/engine.hpp"
#include "btm/pipeline/run_context.hpp"

namespace btm {

// Per-token log-probabilities of M models on S block sets each: the arrays of sets[m][s].blocks
// * T floats, row-major [models][sets].
struct Scores {
  std::vector<std::size_t> offset;  // offset of (m, s) = offset[m * S + s]
  std::vector<float> data;
  double read_s = 0;            // this rank's seconds reading (and receiving) the checkpoints
  std::size_t from_memory = 0;  // models taken from RunContext::trained_params, world-wide
  const float* at(std::size_t m, std::size_t s, std::size_t S) const {
    return data.data() + offset[m * S + s];
  }
};

// The log-probabilities of `models` on `sets` (sets[m]: the block sets of model m, the same
// count for every model), complete on world rank 0 (zeros elsewhere). Model m is scored by group
// m % G. The group leaders' engines keep the parameters of models m < `parents` as parents for
// the parameter averages (Engine::hold_parent).
Scores score_models(RunContext& ctx, EvalGroups& groups, Engine& engine,
                    const std::vector<std::filesystem::path>& models,
                    const std::vector<std::vector<BlockSet>>& sets, std::size_t parents);

// The test log-probabilities of the averages `plan` forms (plan.total floats; average u on
// domain d from plan.offset[u * D + d]), complete on world rank 0. Average u is formed over the
// parents the engines hold (set_average_params) and scored by group u % G; the parents are
// dropped at the end. Collective over the world.
std::vector<float> score_averages(RunContext& ctx, EvalGroups& groups, Engine& engine,
                                  const AveragePlan& plan, const std::vector<BlockSet>& test);

// The test log-probabilities of the merges `plan` forms (plan.total floats; merge u on domain d
// from plan.offset[u * D + d]), complete on world rank 0. Batch b of merges is formed by the
// leader of group b % G from the ELMs `elms` and the seed's checkpoints (merge_params: read
// once and kept where a leader forms several batches and they fit, else streamed; the batches
// of different groups are formed at the same time), and scored by
// that group. Collective over the world.
std::vector<float> score_merges(RunContext& ctx, EvalGroups& groups, Engine& engine,
                                const MergePlan& plan,
                                const std::vector<std::filesystem::path>& elms,
                                const std::vector<BlockSet>& test);

}  // namespace btm

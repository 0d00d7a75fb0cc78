#include "btm/eval/score.hpp"

#include <algorithm>
#include <cstdint>

#include "btm/io/checkpoint.hpp"
#include "btm/pipeline/blocks.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

// Sums `data` over the world onto rank 0 (each entry is written by one rank, the others hold
// zeros, so the sum is exact and independent of the rank count).
void gather_to_root(MpiComm& world, std::vector<float>& data) {
  world.reduce_sum(data.data(), data.size(), 0);
}

}  // namespace

Scores score_models(RunContext& ctx, EvalGroups& groups, Engine& engine,
                    const std::vector<fs::path>& models,
                    const std::vector<std::vector<BlockSet>>& sets, std::size_t parents) {
  const int T = ctx.config.model.context;
  const std::size_t S = sets.empty() ? 0 : sets[0].size();
  Scores scores;
  std::size_t total = 0;
  for (std::size_t m = 0; m < models.size(); ++m)
    for (std::size_t s = 0; s < S; ++s) {
      scores.offset.push_back(total);
      total += sets[m][s].blocks * static_cast<std::size_t>(T);
    }
  scores.data.assign(total, 0.0f);
  for (std::size_t m = static_cast<std::size_t>(groups.index); m < models.size();
       m += static_cast<std::size_t>(groups.groups)) {
    std::vector<float> params =
        load_checkpoint_in_group(*groups.group, models[m], &ctx.config.model, false).params;
    engine.set_params(params);
    for (std::size_t s = 0; s < S; ++s)
      if (sets[m][s].blocks > 0)
        score_blocks(engine, sets[m][s], T, ctx.config.data.batch, *groups.group,
                     scores.data.data() + scores.offset[m * S + s]);
    if (groups.leader() && m < parents) engine.hold_parent(m, std::move(params));
  }
  gather_to_root(ctx.world, scores.data);
  return scores;
}

std::vector<float> score_averages(RunContext& ctx, EvalGroups& groups, Engine& engine,
                                  const AveragePlan& plan, const std::vector<BlockSet>& test) {
  const int T = ctx.config.model.context;
  const std::size_t D = test.size();
  std::vector<float> scores(plan.total, 0.0f);
  for (std::size_t u = 0; u < plan.unique.size(); ++u) {
    if (plan.copy_of[u] != AveragePlan::kNotACopy) continue;
    const int root_group = static_cast<int>(u % static_cast<std::size_t>(groups.groups));
    set_average_params(groups, engine, plan.unique[u], root_group);
    if (groups.index != root_group) continue;
    for (std::size_t d = 0; d < D; ++d)
      if (plan.blocks[u * D + d] > 0)
        score_blocks(engine, {test[d].tokens, plan.blocks[u * D + d]}, T, ctx.config.data.batch,
                     *groups.group, scores.data() + plan.offset[u * D + d]);
  }
  gather_to_root(ctx.world, scores);
  engine.drop_parents();
  return scores;
}

}  // namespace btm

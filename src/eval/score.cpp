#include "btm/eval/score.hpp"

#include <algorithm>
#include <cstdint>

#include "btm/io/checkpoint.hpp"
#include "btm/method/merge.hpp"
#include "btm/pipeline/blocks.hpp"
#include "btm/util/clock.hpp"
#include "btm/util/host_memory.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

// Sums `data` over the world onto rank 0 (each entry is written by one rank, the others hold
// zeros, so the sum is exact and independent of the rank count).
void gather_to_root(MpiComm& world, std::vector<float>& data) {
  world.reduce_sum(data.data(), data.size(), 0);
}

// The parameters of `file` on every rank of the group: from the leader's memory where the run
// trained the model in this process (RunContext::trained_params, handed over and dropped there),
// else read by the leader; both broadcast to the group.
std::vector<float> model_params(RunContext& ctx, MpiComm& group, const fs::path& file,
                                Scores& scores) {
  std::vector<float> params;
  int held = 0;
  if (group.rank() == 0) {
    auto it = ctx.trained_params.find(file);
    if (it != ctx.trained_params.end() && !it->second.empty()) {
      params = std::move(it->second);
      ctx.trained_params.erase(it);
      held = 1;
      ++scores.from_memory;
    }
  }
  group.broadcast(&held, sizeof(held), 0);
  if (!held) return load_checkpoint_in_group(group, file, &ctx.config.model, false).params;
  group.broadcast_vector(params, 0);
  return params;
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
    const auto read_start = Clock::now();
    std::vector<float> params = model_params(ctx, *groups.group, models[m], scores);
    scores.read_s += seconds_since(read_start);
    engine.set_params(params);
    for (std::size_t s = 0; s < S; ++s)
      if (sets[m][s].blocks > 0)
        score_blocks(engine, sets[m][s], T, ctx.config.data.batch, *groups.group,
                     scores.data.data() + scores.offset[m * S + s]);
    if (groups.leader() && m < parents) engine.hold_parent(m, std::move(params));
  }
  gather_to_root(ctx.world, scores.data);
  scores.from_memory =
      static_cast<std::size_t>(ctx.world.allreduce_sum(static_cast<double>(scores.from_memory)));
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

std::vector<float> score_merges(RunContext& ctx, EvalGroups& groups, Engine& engine,
                                const MergePlan& plan, const std::vector<fs::path>& elms,
                                const std::vector<BlockSet>& test) {
  const int T = ctx.config.model.context;
  const std::size_t D = test.size(), n = engine.layout().total();
  std::vector<float> scores(plan.total, 0.0f);
  // A leader forming more than one batch reads the ELMs and the seed once and keeps them, where
  // they take at most a quarter of the memory left (4 methods x 2 passes would read each ELM
  // up to 8 times otherwise).
  std::size_t mine = 0;
  for (std::size_t b = static_cast<std::size_t>(groups.index); b < plan.batches.size();
       b += static_cast<std::size_t>(groups.groups))
    ++mine;
  const double parent_bytes = static_cast<double>(elms.size() + 1) * static_cast<double>(n) * 4;
  MergeParents parents(elms, ctx.config.model,
                       mine > 1 && parent_bytes <= available_host_bytes() / 4);
  std::vector<float> seed;
  for (std::size_t b = static_cast<std::size_t>(groups.index); b < plan.batches.size();
       b += static_cast<std::size_t>(groups.groups)) {
    const auto [first, end] = plan.batches[b];
    std::vector<std::vector<float>> merged;
    // A bad file stops the whole group, not only its leader (the others wait in the broadcast).
    collective_check(*groups.group, [&] {
      if (!groups.leader()) return;
      const std::vector<std::vector<double>> weights(
          plan.weights.begin() + static_cast<std::ptrdiff_t>(first),
          plan.weights.begin() + static_cast<std::ptrdiff_t>(end));
      if (seed.empty()) seed = merge_seed(plan.seed, ctx.config.model);
      merged = merge_params(parents, weights, seed, ctx.config.model,
                            plan.methods[plan.method_of[first]]);
    });
    for (std::size_t u = first; u < end; ++u) {
      std::vector<float> params =
          groups.leader() ? std::move(merged[u - first]) : std::vector<float>(n);
      groups.group->broadcast(params.data(), n * sizeof(float), 0);
      engine.set_params(params);
      for (std::size_t d = 0; d < D; ++d)
        if (plan.blocks[u * D + d] > 0)
          score_blocks(engine, {test[d].tokens, plan.blocks[u * D + d]}, T, ctx.config.data.batch,
                       *groups.group, scores.data() + plan.offset[u * D + d]);
    }
  }
  gather_to_root(ctx.world, scores);
  return scores;
}

}  // namespace btm

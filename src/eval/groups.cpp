#include "btm/eval/groups.hpp"

#include <vector>

#include "btm/method/rank_layout.hpp"
#include "btm/util/error.hpp"
#include "btm/util/fixed_point.hpp"

namespace btm {

EvalGroups make_eval_groups(RunContext& ctx) {
  const int r = ctx.config.run.ranks_per_elm;
  check_ranks_per_elm(ctx.world.size(), r);
  EvalGroups g;
  g.groups = ctx.world.size() / r;
  g.index = ctx.world.rank() / r;
  g.group = ctx.world.split(g.index, ctx.world.rank());
  g.leaders = ctx.world.split(g.group->rank() == 0 ? 0 : 1, ctx.world.rank());
  return g;
}

void set_average_params(EvalGroups& g, Engine& engine, std::span<const double> weights,
                        int root_group) {
  const std::size_t n = engine.layout().total();
  std::vector<float> params;
  if (g.groups == 1) {
    // Every parent is held here: the sum is formed where the engine computes.
    if (g.leader()) engine.set_params_to_average(weights);
    if (g.group->size() == 1) return;
    params.resize(n);
    if (g.leader()) engine.get_params(params);
  } else {
    if (g.leader()) {
      fixed::Sum sum = fixed::Sum::for_weights(n, weights);
      engine.add_parents(weights, sum);
      if (g.leaders->allreduce_max(sum.bad()) > 0)
        throw SystemError(
            "parameter averaging: a parent parameter is outside the fixed-point "
            "range (|w x| > 2^23)");
      g.leaders->reduce_sum(sum.raw().data(), n, root_group);
      if (g.index == root_group) params = sum.result();
    }
    if (g.index != root_group) return;
    params.resize(n);
  }
  g.group->broadcast(params.data(), n * sizeof(float), 0);
  if (!g.leader() || g.groups > 1) engine.set_params(params);
}

}  // namespace btm

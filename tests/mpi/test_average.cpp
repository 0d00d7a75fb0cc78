// set_average_params, the collective phase's parameter averages, under MPI (ctest runs the MPI
// tests with 4 ranks): theta = sum_j w_j theta_j lands in the engine of every rank of the root
// group with the same bits as one process's fixed-point sum, whatever the world's cut into
// groups, which group is the root, and how many ELMs a group holds.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>
#include <vector>

#include "btm/config/config.hpp"
#include "btm/eval/evaluate.hpp"
#include "btm/model/engine.hpp"
#include "btm/pipeline/run_context.hpp"
#include "btm/util/fixed_point.hpp"
#include "mpi_test_util.hpp"

using namespace btm;

namespace {

// Parameter i of ELM j: distinct per ELM and position, not exact on the fixed-point grid.
float theta(std::size_t j, std::size_t i) {
  return static_cast<float>(j + 1) * 0.1f + static_cast<float>(i % 1021) * 1.3e-3f - 0.7f;
}

}  // namespace

TEST(SetAverageParams, SameBitsForEveryLayoutAndRoot) {
  MpiComm& world = btm::test::world();
  const std::size_t elms = 5;
  const std::vector<double> weights = {0.35, 0.25, 0.2, 0.0, 0.2};  // one parent unused
  for (int ranks_per_elm = 1; ranks_per_elm <= world.size(); ranks_per_elm *= 2) {
    if (world.size() % ranks_per_elm != 0) continue;
    Config config;
    config.run.device = Device::cpu;
    config.run.threads = 1;
    config.run.ranks_per_elm = ranks_per_elm;
    RunContext ctx = make_context(config, world, btm::test::backends());
    EvalGroups g = make_eval_groups(ctx);
    std::unique_ptr<Engine> engine = make_engine_for(ctx);
    const std::size_t n = engine->layout().total();
    // ELM j is held by group j % groups (as the evaluation deals them out), on its leader.
    fixed::Sum want(n);
    for (std::size_t j = 0; j < elms; ++j) {
      std::vector<float> params(n);
      for (std::size_t i = 0; i < n; ++i) params[i] = theta(j, i);
      want.add(params, weights[j]);
      if (g.leader() && j % static_cast<std::size_t>(g.groups) == static_cast<std::size_t>(g.index))
        engine->hold_parent(j, std::move(params));
    }
    const int root_group = g.groups - 1;  // not always group 0
    SCOPED_TRACE("ranks_per_elm " + std::to_string(ranks_per_elm) + ", root group " +
                 std::to_string(root_group));
    const std::vector<float> before(n, 0.5f);
    engine->set_params(before);
    set_average_params(g, *engine, weights, root_group);
    std::vector<float> got(n);
    engine->get_params(got);
    const std::vector<float>& expected = g.index == root_group ? want.result() : before;
    EXPECT_EQ(std::memcmp(got.data(), expected.data(), n * sizeof(float)), 0)
        << (g.index == root_group ? "the average" : "another group's parameters changed");
  }
}

// weighted_average, the collective phase's parameter averages, under MPI (ctest runs the MPI
// tests with 4 ranks): theta = sum_j w_j theta_j lands on every rank of the root group, whatever
// the world's cut into groups, which group is the root, and how many ELMs a group holds.
#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <map>
#include <vector>

#include "btm/config.hpp"
#include "btm/evaluate.hpp"
#include "btm/run_context.hpp"
#include "mpi_test_util.hpp"

using namespace btm;

namespace {

// Parameter i of ELM j: distinct per ELM and position, exact in fp32.
float theta(std::size_t j, std::size_t i) {
  return static_cast<float>(j + 1) + static_cast<float>(i % 1024) * 0.25f;
}

}  // namespace

TEST(WeightedAverage, EqualsTheWeightedSumForEveryLayoutAndRoot) {
  MpiComm& world = btm::test::world();
  // One element past the 2^24-element chunk of the reduction, so two chunks are summed.
  const std::size_t n = (std::size_t{1} << 24) + 3;
  const std::size_t elms = 4;
  const std::vector<double> weights = {0.4, 0.3, 0.2, 0.1};
  for (int ranks_per_elm = 1; ranks_per_elm <= world.size(); ranks_per_elm *= 2) {
    if (world.size() % ranks_per_elm != 0) continue;
    Config config;
    config.run.device = "cpu";
    config.run.ranks_per_elm = ranks_per_elm;
    RunContext ctx = make_context(config, world);
    EvalGroups g = make_eval_groups(ctx);
    // ELM j is held by group j % groups (as the evaluation deals them out), on its leader.
    std::map<std::size_t, std::vector<float>> held;
    if (g.leader())
      for (std::size_t j = static_cast<std::size_t>(g.index); j < elms;
           j += static_cast<std::size_t>(g.groups)) {
        std::vector<float> params(n);
        for (std::size_t i = 0; i < n; ++i) params[i] = theta(j, i);
        held.emplace(j, std::move(params));
      }
    const int root_group = g.groups - 1;  // not always group 0
    SCOPED_TRACE("ranks_per_elm " + std::to_string(ranks_per_elm) + ", root group " +
                 std::to_string(root_group));
    const std::vector<float> out = weighted_average(g, held, weights, root_group, n);
    if (g.index != root_group) {
      EXPECT_TRUE(out.empty());
      continue;
    }
    ASSERT_EQ(out.size(), n);
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < n; ++i) {
      double want = 0;
      for (std::size_t j = 0; j < elms; ++j) want += weights[j] * theta(j, i);
      if (std::fabs(out[i] - want) > 1e-6 * std::fabs(want)) ++wrong;
    }
    EXPECT_EQ(wrong, 0u) << "of " << n << " parameters";
  }
}

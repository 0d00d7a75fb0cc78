// The rank layout planner over a table of (W, r, K) cases, including the refusals.
#include <gtest/gtest.h>

#include <set>

#include "btm/error.hpp"
#include "btm/rank_layout.hpp"
#include "btm/run_context.hpp"

using namespace btm;

namespace {
std::vector<std::string> domains(int k) {
  std::vector<std::string> out;
  for (int i = 0; i < k; ++i) out.push_back("d" + std::to_string(i));
  return out;
}
}  // namespace

TEST(RankLayout, TableOfValidLayouts) {
  struct Case {
    int world, ranks_per_elm, elms, groups, waves;
  };
  for (const Case c :
       {Case{1, 1, 1, 1, 1}, Case{4, 1, 4, 4, 1}, Case{4, 2, 2, 2, 1}, Case{4, 4, 3, 1, 3},
        Case{8, 2, 8, 4, 2}, Case{16, 2, 12, 8, 2}, Case{6, 3, 5, 2, 3}, Case{4, 1, 2, 4, 1}}) {
    const RankLayout l = plan_layout(c.world, c.ranks_per_elm, domains(c.elms));
    EXPECT_EQ(l.groups, c.groups) << c.world << " " << c.ranks_per_elm << " " << c.elms;
    EXPECT_EQ(l.waves, c.waves) << c.world << " " << c.ranks_per_elm << " " << c.elms;
    ASSERT_EQ(static_cast<int>(l.elms.size()), c.elms);
    // Every ELM exactly once; no group holds two ELMs in one wave; waves fill groups in order.
    std::set<std::pair<int, int>> slots;
    for (int k = 0; k < c.elms; ++k) {
      const ElmAssignment& a = l.elms[static_cast<std::size_t>(k)];
      EXPECT_EQ(a.name, "d" + std::to_string(k));
      EXPECT_TRUE(slots.insert({a.group, a.wave}).second);
      EXPECT_EQ(a.group, k % c.groups);
      EXPECT_EQ(a.wave, k / c.groups);
    }
    for (int rank = 0; rank < c.world; ++rank) EXPECT_EQ(l.group_of(rank), rank / c.ranks_per_elm);
  }
}

TEST(RankLayout, RefusalsSayWhatWouldWork) {
  struct Case {
    int world, ranks_per_elm, elms;
    const char* says;
  };
  for (const Case c : {Case{6, 4, 2, "{1, 2, 3, 6}"}, Case{2, 4, 2, "larger than the 2 ranks"},
                       Case{4, 0, 2, ">= 1"}, Case{4, 2, 0, "data.domains"}}) {
    try {
      plan_layout(c.world, c.ranks_per_elm, domains(c.elms));
      FAIL() << "accepted W=" << c.world << " r=" << c.ranks_per_elm << " K=" << c.elms;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(c.says), std::string::npos) << e.what();
    }
  }
}

TEST(RankLayout, DescriptionNamesRanksGroupsAndWaves) {
  const std::string text = describe_layout(plan_layout(16, 2, domains(12)), 100, 1024);
  EXPECT_NE(text.find("16 ranks, 2 per ELM -> 8 groups; 12 ELMs in 2 waves"), std::string::npos)
      << text;
  EXPECT_NE(text.find("group 7 (ranks 14-15) trains ELM 'd7'"), std::string::npos) << text;
  EXPECT_NE(text.find("group 3 (ranks 6-7) trains ELM 'd11'"), std::string::npos) << text;
  EXPECT_NE(text.find("4 group-wave slots are idle"), std::string::npos) << text;
}

// Which visible GPU a node-local rank takes (make_context then refuses two ranks on one
// physical GPU unless run.share_gpus).
TEST(RankLayout, DeviceOfEachLocalRank) {
  for (bool share : {false, true}) {
    // mpirun: every rank sees the node's GPUs.
    EXPECT_EQ(gpu_of_local_rank(4, 0, 4, share), 0);
    EXPECT_EQ(gpu_of_local_rank(4, 3, 4, share), 3);
    EXPECT_EQ(gpu_of_local_rank(8, 2, 4, share), 2);
    // Slurm binding one GPU per task, or one GPU for all (then a shared one).
    EXPECT_EQ(gpu_of_local_rank(1, 3, 4, share), 0);
    EXPECT_EQ(gpu_of_local_rank(0, 0, 1, share), -1);
  }
  // 4 ranks, 2 GPUs: refused, or shared round robin.
  EXPECT_EQ(gpu_of_local_rank(2, 3, 4, false), -1);
  EXPECT_EQ(gpu_of_local_rank(2, 2, 4, true), 0);
  EXPECT_EQ(gpu_of_local_rank(2, 3, 4, true), 1);
}

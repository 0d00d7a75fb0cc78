// The rank layout planner over a table of (W, r, K) cases, including the refusals.
#include <gtest/gtest.h>

#include <set>

#include "btm/method/budget.hpp"
#include "btm/method/rank_layout.hpp"
#include "btm/pipeline/run_context.hpp"
#include "btm/util/error.hpp"

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

TEST(RankLayout, OneRankAndOneGroupAreSingular) {
  const std::string text = describe_layout(plan_layout(1, 1, domains(3)), 1000, 2048);
  EXPECT_NE(text.find("1 rank, 1 per ELM -> 1 group; 3 ELMs in 3 waves"), std::string::npos)
      << text;
  EXPECT_NE(text.find("group 0 (rank 0) trains ELM 'd0': 1,000 steps, 2,048,000 tokens"),
            std::string::npos)
      << text;
}

Config budget_config(int batch, int accum, int ranks_per_elm, std::int64_t steps, double share) {
  Config c;
  c.model.context = 32;
  c.data.batch = batch;
  c.data.accum = accum;
  c.run.ranks_per_elm = ranks_per_elm;
  c.run.steps = steps;
  c.run.seed_share = share;
  return c;
}

// The paper's rule: every model path takes S steps; an ELM's batch is r x A micro-batches, the
// seed's and the dense's K times that; forest tokens = dense tokens, exactly, for any K, r, A,
// S and share, whatever world runs it.
TEST(Budget, ThePapersRule) {
  const Budget b = make_budget(budget_config(16, 4, 2, 80000, 0.5), 8);
  EXPECT_EQ(b.total_steps, 80000);
  EXPECT_EQ(b.seed_steps, 40000);
  EXPECT_EQ(b.elm_steps, 40000);
  EXPECT_EQ(b.elm_batch, (GlobalBatch{16, 8}));
  EXPECT_EQ(b.world_batch, (GlobalBatch{16, 64}));
  EXPECT_EQ(b.world_batch.sequences(), 1024);
  EXPECT_EQ(b.tokens_per_step(b.world_batch), 1024 * 32);
  for (int K : {1, 3, 8})
    for (int r : {1, 2, 3})
      for (int A : {1, 2, 5})
        for (double share : {0.0, 0.3, 0.5, 0.7})
          for (std::int64_t S : {1, 7, 500}) {
            const Budget c = make_budget(budget_config(3, A, r, S, share), K);
            ASSERT_EQ(c.seed_steps + c.elm_steps, S);
            ASSERT_EQ(c.world_batch.micro_batches, K * c.elm_batch.micro_batches);
            ASSERT_EQ(c.forest_tokens(), c.dense_tokens()) << K << " " << r << " " << A;
          }
}

TEST(Budget, ValidWorldsFormTheSeedsBatchWithWholeGroups) {
  // K r A = 3 x 2 x 2 = 12 micro-batches; groups of 2: W in {2, 4, 6, 12}.
  const Budget b = make_budget(budget_config(4, 2, 2, 10, 0.5), 3);
  EXPECT_EQ(valid_worlds(b), (std::vector<int>{2, 4, 6, 12}));
  for (int w : {2, 4, 6, 12}) EXPECT_NO_THROW(check_world(b, w)) << w;
  for (int w : {1, 3, 5, 8, 24}) {
    try {
      check_world(b, w);
      ADD_FAILURE() << "accepted W=" << w;
    } catch (const InputError& e) {
      const std::string what = e.what();
      const std::string ranks = w == 1 ? "1 rank" : std::to_string(w) + " ranks";  // no "1 ranks"
      EXPECT_NE(what.find("rank layout: " + ranks + " cannot form"), std::string::npos) << what;
      EXPECT_NE(what.find("start 2, 4, 6 or 12 ranks"), std::string::npos) << what;
    }
  }
  EXPECT_EQ(accumulation(b.world_batch, 4, "seed"), 3);
  EXPECT_EQ(accumulation(b.elm_batch, 2, "d0"), 2);
  try {
    accumulation(b.elm_batch, 3, "d0");
    ADD_FAILURE() << "3 ranks accepted for 4 micro-batches";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("train it on 1, 2 or 4 ranks"), std::string::npos)
        << e.what();
  }
}

TEST(Budget, DescriptionHasEveryPhaseAndTheMatch) {
  const Budget b = make_budget(budget_config(16, 1, 1, 1000, 0.5), 8);
  const std::string text = describe_budget(b, 1);
  EXPECT_NE(text.find("8 ELMs x 1 rank stand for 8 ranks, run on 1"), std::string::npos) << text;
  // seed: 1 rank, micro-batch 16, accumulation 8, 128 sequences = 4,096 tokens, 500 steps.
  EXPECT_NE(text.find("seed              1           16      8                128 / 4,096"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("500 each"), std::string::npos) << text;
  EXPECT_NE(text.find("match: forest (seed + 8 ELMs) 4,096,000 tokens, dense 4,096,000 tokens: "
                      "equal"),
            std::string::npos)
      << text;
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

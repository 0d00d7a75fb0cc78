// The progress and validation lines of training (pipeline/progress): their fields and formats,
// and the ETA arithmetic of the work ahead.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "btm/data/corpus.hpp"
#include "btm/model/params.hpp"
#include "btm/pipeline/progress.hpp"
#include "btm/pipeline/run_context.hpp"
#include "test_util.hpp"

using namespace btm;

namespace {

ProgressLine example() {
  ProgressLine p;
  p.name = "seed";
  p.step = 10;
  p.target_steps = 100;
  p.loss = 5.12346;
  p.lr = 1e-4;
  p.grad_norm = 0.8124;
  p.step_ms = 152.34;
  p.tokens_per_s = 53812.4;
  p.mfu = 0.4123;
  p.memory_bytes = 12.5 * 1024 * 1024 * 1024;
  p.tokens = 1310720;
  p.model_eta_s = 62;
  p.run_eta_s = 3600 + 12 * 60 + 34;
  p.now = 86400 + 3600 + 2 * 60 + 3;  // 1970-01-02 01:02:03 UTC
  return p;
}

}  // namespace

TEST(Progress, LineHasEveryField) {
  const std::string line = format_progress(example());
  EXPECT_EQ(line.rfind("[seed] step 10/100 | ", 0), 0u) << line;  // what the log parsers match
  for (const char* field :
       {"| loss 5.1235 |", "| lr 1.000e-04 |", "| |g| 0.812 |", "| 152.3 ms/step |",
        "| 53,812 tok/s |", "| MFU 41.2% |", "| mem 12.50 GiB |", "| 1.31M tokens |",
        "| ETA 00:01:02, run 01:12:34 |", "| 1970-01-02T01:02:03Z"})
    EXPECT_NE(line.find(field), std::string::npos) << field << " not in: " << line;
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

TEST(Progress, MfuIsNotApplicableWithoutAPeakAndTheEtaIsTheModelsWithNothingAfterIt) {
  ProgressLine p = example();
  p.mfu = model_flops_utilization(p.tokens_per_s, 1e6, 1, 0.0);  // the CPU: no peak
  p.run_eta_s = -1;
  const std::string line = format_progress(p);
  EXPECT_NE(line.find("| MFU n/a |"), std::string::npos) << line;
  EXPECT_NE(line.find("| ETA 00:01:02 |"), std::string::npos) << line;
  EXPECT_EQ(line.find("run "), std::string::npos) << line;
}

TEST(Progress, MfuIsTokensTimesFlopsOverThePeakOfTheDevices) {
  // 100,000 tok/s x 6e8 FLOPs per token = 6e13 FLOP/s on 2 devices of 100 TFLOP/s: 30%.
  EXPECT_DOUBLE_EQ(model_flops_utilization(1e5, 6e8, 2, 100.0), 0.3);
  EXPECT_TRUE(std::isnan(model_flops_utilization(1e5, 6e8, 2, 0.0)));
}

TEST(Progress, ValidationLineNamesEachDomainsPerplexity) {
  const std::string line = format_validation("seed", 25, 100, {"religious", "dictionary"},
                                             {std::log(523.1), std::log(300.2)}, 2500, 0.314);
  EXPECT_EQ(line,
            "[seed] valid step 25/100 | ppl religious 523.10, dictionary 300.20 | "
            "2.50K tokens | 0.31 s");
}

TEST(Progress, DurationsCountsAndTimestamps) {
  EXPECT_EQ(format_duration(0), "00:00:00");
  EXPECT_EQ(format_duration(3 * 3600 + 4 * 60 + 5.4), "03:04:05");
  EXPECT_EQ(format_duration(2 * 86400 + 3 * 3600 + 7), "2d 03:00:07");
  EXPECT_EQ(format_duration(-1), "--:--:--");
  EXPECT_EQ(format_duration(std::numeric_limits<double>::infinity()), "--:--:--");
  EXPECT_EQ(short_count(999), "999");
  EXPECT_EQ(short_count(2500), "2.50K");
  EXPECT_EQ(short_count(1310720), "1.31M");
  EXPECT_EQ(short_count(3.2e9), "3.20G");
  EXPECT_EQ(utc_timestamp(0), "1970-01-01T00:00:00Z");
}

// Models after this one at `rate` training tokens/s per rank, evaluation tokens at 3x the rate.
TEST(Progress, WorkAheadSecondsAddModelsAndEvaluation) {
  WorkAhead w;
  w.world = 4;
  w.models.push_back({100, 1000, 2});  // an ELM: 100 steps x 1000 tokens on 2 ranks
  w.models.push_back({50, 4000, 4});   // dense: 50 steps x 4000 tokens on 4 ranks
  w.eval_tokens = 120000;              // over 4 ranks, a third of a training token each
  const double rate = 500;             // tokens/s per rank
  const double expect = (100.0 * 1000 / 2 + 50.0 * 4000 / 4 + 120000.0 / 4 / 3) / rate;
  EXPECT_DOUBLE_EQ(w.seconds(rate), expect);
  EXPECT_FALSE(w.empty());
  EXPECT_TRUE(WorkAhead{}.empty());
  EXPECT_LT(w.seconds(0), 0);
}

// What follows the seed in `btm run` on one rank: the 3 ELMs (an ELM's steps, batch and ranks
// each), the dense baseline continuing the seed, and the evaluation's forward tokens: every ELM
// on the test and validation blocks of each domain, dense and two averages on the test blocks.
// After the dense baseline only the evaluation; nothing after the last model of `btm train`.
TEST(Progress, WorkAfterTheSeedIsTheElmsTheDenseBaselineAndTheEvaluation) {
  btm::test::TempDir dir;
  const std::vector<std::string> domains = {"d0", "d1", "d2"};
  for (std::size_t k = 0; k < domains.size(); ++k)
    btm::test::write_synthetic_corpus(dir.path(), domains[k], k + 1, 4000);
  btm::test::write_synthetic_corpus(dir.path(), "held", 9, 4000);
  Config c;
  c.model.context = 16;
  c.data.corpus = dir.path().string();
  c.data.domains = domains;
  c.data.eval_domains = {"held"};
  c.data.batch = 2;
  c.data.accum = 2;
  c.run.dir = (dir / "run").string();
  c.run.steps = 40;
  c.run.seed_share = 0.25;
  c.eval.blocks = 5;
  c.eval.prior_blocks = 1000;  // more than a valid split holds: all of its blocks
  MpiComm self(MPI_COMM_SELF, false);
  RunContext ctx(c, self);
  ctx.ahead = {true, true, true};

  const WorkAhead w = work_after(ctx, "seed", {});
  ASSERT_EQ(w.models.size(), 4u);
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(w.models[static_cast<std::size_t>(k)].steps, 30) << k;
    EXPECT_EQ(w.models[static_cast<std::size_t>(k)].tokens_per_step, 1 * 2 * 2 * 16) << k;
    EXPECT_EQ(w.models[static_cast<std::size_t>(k)].ranks, 1) << k;
  }
  EXPECT_EQ(w.models[3].steps, 30);                        // dense continues the seed at step 10
  EXPECT_EQ(w.models[3].tokens_per_step, 3 * 2 * 2 * 16);  // K x an ELM's batch
  double valid_blocks = 0;
  for (const char* d : {"d0", "d1", "d2", "held"}) {
    const CorpusInfo info = read_corpus_info(corpus_path(dir.path(), d));
    valid_blocks += static_cast<double>((info.tokens[1] - 1) / 16);
  }
  const double test_blocks = 4 * 5;
  EXPECT_DOUBLE_EQ(w.eval_tokens, 16 * ((3 + 1 + 2) * test_blocks + 3 * valid_blocks));

  const WorkAhead after_dense = work_after(ctx, "dense", {});
  EXPECT_TRUE(after_dense.models.empty());
  EXPECT_DOUBLE_EQ(after_dense.eval_tokens, w.eval_tokens);
  ctx.ahead = {};
  EXPECT_TRUE(work_after(ctx, "d0", {}).empty());
  const WorkAhead later = work_after(ctx, "d0", {"d1"});
  ASSERT_EQ(later.models.size(), 1u);
  EXPECT_EQ(later.models[0].steps, 30);
}

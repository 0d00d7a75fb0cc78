// The ensemble's generation over groups of ranks (ctest runs this file with 4 ranks): the same
// tokens on 1 rank (every expert in turn), 4 groups of one rank and 2 groups of two, and only
// next-token log-probabilities travel.
#include <gtest/gtest.h>

#include "btm/eval/generate.hpp"
#include "btm/eval/groups.hpp"
#include "btm/io/forest.hpp"
#include "btm/pipeline/run_context.hpp"
#include "generate_test_util.hpp"
#include "mpi_test_util.hpp"

using namespace btm;
using btm::test::SharedDir;
using btm::test::world;

namespace {

Generated run_ensemble(Config config, MpiComm& comm, int ranks_per_elm,
                       const std::vector<std::string>& names, const GenerateRequest& r,
                       std::uint64_t* bytes_sent = nullptr) {
  config.run.ranks_per_elm = ranks_per_elm;
  RunContext ctx = make_context(config, comm, test::backends());
  EvalGroups groups = make_eval_groups(ctx);
  EnsembleSpec spec;
  for (const std::string& n : names) spec.experts.push_back(checkpoint_file(ctx.run_dir, n));
  spec.prior = {0.2, 0.5, 0.3};
  const std::uint64_t before = groups.leaders->bytes_sent();
  Generated g = generate_from_ensemble(ctx, groups, spec, r);
  if (bytes_sent) *bytes_sent = groups.leaders->bytes_sent() - before;
  return g;
}

}  // namespace

TEST(EnsembleGenerationMpi, TheSameTokensOnOneRankAndOverGroups) {
  MpiComm& w = world();
  SharedDir dir(w, "btm-generate");
  const std::vector<std::string> names = {"d0", "d1", "d2"};
  Config config;
  if (w.rank() == 0) config = test::make_generate_forest(dir / "corpus", dir / "run", names);
  w.barrier();
  if (w.rank() != 0) {
    config.model = test::generate_model();
    config.run.dir = (dir / "run").string();
    config.run.device = Device::cpu;
    config.run.threads = 1;
  }
  GenerateRequest r;
  r.prompt = {97, 98, 99};
  r.max_tokens = 10;
  r.samples = 2;
  r.seed = 17;
  r.sampling.top_k = 50;
  // One rank alone: every expert on rank 0, one after the other.
  std::unique_ptr<MpiComm> alone = w.split(w.rank() == 0 ? 0 : 1, w.rank());
  Generated one;
  if (w.rank() == 0) one = run_ensemble(config, *alone, 1, names, r);
  std::uint64_t bytes = 0;
  const Generated four = run_ensemble(config, w, 1, names, r, &bytes);
  const Generated two = run_ensemble(config, w, 2, names, r);
  if (w.rank() == 1) {
    // Group 1 runs expert d1 and sends only its next-token log-probabilities: per step the
    // 2 x 257 floats of both samples (and the 8-byte size of the gather), the prompt's 2 floats
    // once, a few bytes of error agreement. The model's parameters alone would be more.
    const std::uint64_t per_step = 2 * 257 * 4, most = 10 * (per_step + 8) + 2 * 4 + 64;
    EXPECT_GE(bytes, 10 * per_step);
    EXPECT_LE(bytes, most);
    EXPECT_GT(ParamLayout(config.model).total() * 4, most);
  }
  if (w.rank() != 0) {
    EXPECT_TRUE(four.tokens.empty());
    return;
  }
  ASSERT_EQ(one.tokens.size(), 2u);
  EXPECT_EQ(one.tokens[0].size(), 10u);
  EXPECT_EQ(four.tokens, one.tokens);
  EXPECT_EQ(two.tokens, one.tokens);
}

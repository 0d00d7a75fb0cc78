// Merges of task vectors end to end under MPI (4 ranks): `btm average --method` on a tiny CPU
// forest against the merge of the same checkpoints in memory, and the merge rows of `btm eval`
// with their parameters in eval.h5, the same on 4 groups and on 1 rank.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "btm/app/commands.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/eval_file.hpp"
#include "btm/io/forest.hpp"
#include "btm/method/merge.hpp"
#include "btm/model/params.hpp"
#include "btm/util/error.hpp"
#include "mpi_test_util.hpp"
#include "test_util.hpp"

using namespace btm;
namespace fs = std::filesystem;
using btm::test::SharedDir;
using btm::test::world;

namespace {

// The flags of a tiny forest (2 x 32 GPT, context 16, CPU) on the synthetic corpora d0, d1 (train)
// and d2 (held out) in dir/corpus, run directory dir/run; `more` adds the test's own flags.
Args forest_args(const SharedDir& dir, const std::string& run, const Args& more) {
  Args args = {"--data.corpus",       (dir / "corpus").string(),
               "--data.domains",      "d0,d1",
               "--data.eval_domains", "d2",
               "--run.dir",           (dir / run).string(),
               "--model.n_layer",     "2",
               "--model.d_model",     "32",
               "--model.n_head",      "2",
               "--model.context",     "16",
               "--run.threads",       "1",
               "--run.device",        "cpu",
               "--run.dense",         "false",
               "--optim.lr",          "3e-3",
               "--data.batch",        "2",
               "--data.accum",        "2",
               "--run.steps",         "6",
               "--run.seed_share",    "0.5",
               "--eval.blocks",       "3",
               "--eval.prior_blocks", "4",
               "--eval.prior_batch",  "2"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

std::vector<float> params_of(const fs::path& run, const std::string& name) {
  return load_checkpoint(checkpoint_file(run, name)).params;
}

std::size_t row(const EvalResults& r, const std::string& name) {
  return static_cast<std::size_t>(std::find(r.methods.begin(), r.methods.end(), name) -
                                  r.methods.begin());
}

}  // namespace

TEST(Merge, AverageMethodsAndEvalRowsOnATinyForest) {
  SharedDir dir(world());
  if (world().rank() == 0) {
    fs::create_directories(dir / "corpus");
    for (int k = 0; k < 3; ++k)
      btm::test::write_synthetic_corpus(dir / "corpus", "d" + std::to_string(k),
                                        static_cast<std::uint64_t>(k + 1), 6000);
  }
  world().barrier();
  ASSERT_EQ(cmd_run(forest_args(dir, "run", {"--no-eval"}), world(), btm::test::backends()),
            kExitOk);

  // btm average --method: the checkpoint is the merge of the forest's checkpoints in memory.
  const Args ties = {"--name", "ties", "--method", "ties", "--density", "0.5", "--lambda", "1.5"};
  const Args dare = {"--name", "dare",   "--method", "dare",      "--drop",
                     "0.5",    "--seed", "3",        "--weights", "1,3"};
  for (const Args& more :
       {ties, dare, Args{"--name", "ta", "--method", "task-arithmetic"}, Args{"--name", "avg"}})
    ASSERT_EQ(cmd_average(forest_args(dir, "run", more), world(), btm::test::backends()), kExitOk);
  EXPECT_THROW(cmd_average(forest_args(dir, "run", {"--name", "x", "--method", "mean"}), world(),
                           btm::test::backends()),
               InputError);
  if (world().rank() == 0) {
    const fs::path run = dir / "run";
    const std::vector<float> seed = params_of(run, "seed");
    const std::vector<std::vector<float>> elms = {params_of(run, "d0"), params_of(run, "d1")};
    const Config config = [&] {
      Config c;
      c.model.n_layer = 2;
      c.model.d_model = 32;
      c.model.n_head = 2;
      c.model.context = 16;
      return c;
    }();
    const std::vector<std::size_t> ends = tensor_ends(ParamLayout(config.model));
    const auto in_memory = [&](const MergeOptions& o, const std::vector<double>& w) {
      TaskVectorMerge m(o, {w}, seed, ends);
      for (int pass = 0; pass < m.passes(); ++pass)
        for (std::size_t j = 0; j < elms.size(); ++j) m.add(pass, j, elms[j]);
      return m.result();
    };
    EXPECT_EQ(params_of(run, "ties"), in_memory({MergeMethod::ties, 1.5, 0.5, 0.9, 1}, {0.5, 0.5}));
    EXPECT_EQ(params_of(run, "dare"),
              in_memory({MergeMethod::dare, 1.0, 0.2, 0.5, 3}, {0.25, 0.75}));
    // Task arithmetic with lambda 1 is the average, to float rounding.
    const std::vector<float> ta = params_of(run, "ta"), avg = params_of(run, "avg");
    ASSERT_EQ(ta.size(), avg.size());
    for (std::size_t i = 0; i < ta.size(); ++i) ASSERT_NEAR(ta[i], avg[i], 1e-7) << i;
    EXPECT_NE(params_of(run, "ties"), avg);
    const Forest forest = load_forest(run);
    ASSERT_TRUE(forest.find("ties"));
    EXPECT_EQ(forest.find("ties")->kind, ModelKind::average);
    EXPECT_EQ(forest.find("dare")->parents, (std::vector<std::string>{"d0", "d1"}));
    EXPECT_EQ(forest.find("dare")->parent_weights, (std::vector<double>{0.25, 0.75}));
    fs::copy(run, dir / "run1", fs::copy_options::recursive);
  }
  world().barrier();

  // btm eval with merge rows, on 4 groups and on 1 rank.
  const Args merges = {"--eval.merges",        "task-arithmetic,ties,dare",
                       "--eval.merge_density", "0.5",
                       "--eval.merge_drop",    "0.5",
                       "--eval.merge_seed",    "3"};
  EXPECT_THROW(cmd_eval(forest_args(dir, "run", {"--eval.merges", "ties,average"}), world(),
                        btm::test::backends()),
               InputError);
  EXPECT_EQ(cmd_eval(forest_args(dir, "run", merges), world(), btm::test::backends()), kExitOk);
  std::unique_ptr<MpiComm> one = world().split(world().rank() == 0 ? 0 : 1, world().rank());
  if (world().rank() == 0) {
    EXPECT_EQ(cmd_eval(forest_args(dir, "run1", merges), *one, btm::test::backends()), kExitOk);
    const EvalResults r = read_eval_file(eval_file(dir / "run"));
    const std::vector<std::string> rows = {"merge:task-arithmetic:uniform",
                                           "merge:task-arithmetic:cached-prior",
                                           "merge:ties:uniform",
                                           "merge:ties:cached-prior",
                                           "merge:dare:uniform",
                                           "merge:dare:cached-prior"};
    const std::size_t first = row(r, rows[0]), D = r.domains.size();
    ASSERT_EQ(first, row(r, "average:argmax") + 1) << "merge rows follow the averages";
    ASSERT_LE(first + rows.size(), r.methods.size());
    EXPECT_EQ(std::vector<std::string>(
                  r.methods.begin() + static_cast<std::ptrdiff_t>(first),
                  r.methods.begin() + static_cast<std::ptrdiff_t>(first + rows.size())),
              rows);
    for (std::size_t m = first; m < first + rows.size(); ++m)
      for (std::size_t d = 0; d < D; ++d) {
        EXPECT_TRUE(std::isfinite(r.perplexity[m * D + d])) << r.methods[m];
        EXPECT_GT(r.perplexity[m * D + d], 1.0) << r.methods[m];
      }
    // Task arithmetic with lambda 1 scores as the average of the same weights.
    for (const char* scheme : {"uniform", "cached-prior"})
      for (std::size_t d = 0; d < D; ++d) {
        const double a = r.perplexity[row(r, std::string("average:") + scheme) * D + d];
        EXPECT_NEAR(r.perplexity[row(r, std::string("merge:task-arithmetic:") + scheme) * D + d], a,
                    1e-4 * a)
            << scheme << " " << d;
      }
    ASSERT_TRUE(r.merges.has_value());
    const EvalMerges& m = *r.merges;
    EXPECT_EQ(m.rows, rows);
    EXPECT_EQ(m.method, (std::vector<std::string>{"task-arithmetic", "task-arithmetic", "ties",
                                                  "ties", "dare", "dare"}));
    EXPECT_EQ(m.scheme, (std::vector<std::string>{"uniform", "cached-prior", "uniform",
                                                  "cached-prior", "uniform", "cached-prior"}));
    EXPECT_EQ(m.lambda, std::vector<double>(6, 1.0));
    for (std::size_t i = 0; i < 6; ++i) {
      EXPECT_EQ(std::isnan(m.density[i]), m.method[i] != "ties") << i;
      EXPECT_EQ(std::isnan(m.drop[i]), m.method[i] != "dare") << i;
    }
    EXPECT_EQ(m.density[2], 0.5);
    EXPECT_EQ(m.drop[4], 0.5);
    EXPECT_EQ(m.seed, 3);
    EXPECT_EQ(m.base, "seed");
    // The same numbers on 1 rank: every merge is formed from the files by one leader.
    const EvalResults single = read_eval_file(eval_file(dir / "run1"));
    EXPECT_EQ(single.methods, r.methods);
    EXPECT_EQ(single.perplexity, r.perplexity);
    ASSERT_TRUE(single.merges.has_value());
  }
  world().barrier();
}

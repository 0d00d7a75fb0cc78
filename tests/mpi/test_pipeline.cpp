// The BTM pipeline under MPI (ctest runs this file with 4 ranks): data parallelism inside a
// group, independence of groups, no traffic between groups, an end-to-end forest, restarts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "btm/app/commands.hpp"
#include "btm/data/corpus.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/eval_file.hpp"
#include "btm/io/forest.hpp"
#include "btm/io/metrics.hpp"
#include "btm/method/average.hpp"
#include "btm/model/backend.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/pipeline/run_context.hpp"
#include "btm/util/error.hpp"
#include "mpi_test_util.hpp"
#include "test_util.hpp"

using namespace btm;
namespace fs = std::filesystem;
using btm::test::SharedDir;
using btm::test::world;

namespace {

Config tiny_config(const fs::path& corpus, const fs::path& run, std::vector<std::string> domains) {
  Config c;
  c.model.n_layer = 2;
  c.model.n_head = 2;
  c.model.d_model = 32;
  c.model.context = 16;
  c.model.vocab_size = 257;
  c.model.vocab_multiple = 64;
  c.optim.lr = 3e-3;
  c.optim.warmup_fraction = 0.1;
  c.data.corpus = corpus.string();
  c.data.domains = std::move(domains);
  c.data.batch = 2;
  c.run.dir = run.string();
  c.run.steps = 8;
  c.run.seed_share = 0.25;
  c.run.checkpoint_every = 3;
  c.run.log_every = 2;
  c.run.threads = 1;
  c.run.device = Device::cpu;
  c.run.dense = false;
  c.eval.blocks = 4;
  c.eval.prior_blocks = 4;
  c.eval.prior_batch = 2;
  return c;
}

void make_corpora(MpiComm& comm, const fs::path& dir, int count) {
  if (comm.rank() == 0) {
    fs::create_directories(dir);
    for (int k = 0; k < count; ++k)
      btm::test::write_synthetic_corpus(dir, "d" + std::to_string(k),
                                        static_cast<std::uint64_t>(k + 1), 6000);
  }
  comm.barrier();
}

std::vector<float> params_of(const fs::path& run, const std::string& name) {
  return load_checkpoint(checkpoint_file(run, name)).params;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    m = std::max(m, static_cast<double>(std::abs(a[i] - b[i])));
  return m;
}

// "--key value" pairs as command-line arguments.
Args flags(std::initializer_list<std::pair<const char*, std::string>> pairs) {
  Args args;
  for (const auto& [key, value] : pairs) {
    args.push_back(key);
    args.push_back(value);
  }
  return args;
}

// The flags of a tiny forest on the synthetic corpora in dir/corpus: a 2 x 32 GPT with context
// 16 on CPU, one thread per rank, learning rate 3e-3; `more` adds the test's own flags.
Args tiny_forest_args(const SharedDir& dir, const std::string& domains, const std::string& run,
                      const Args& more) {
  Args args = flags({{"--data.corpus", (dir / "corpus").string()},
                     {"--data.domains", domains},
                     {"--run.dir", (dir / run).string()},
                     {"--model.n_layer", "2"},
                     {"--model.d_model", "32"},
                     {"--model.n_head", "2"},
                     {"--model.context", "16"},
                     {"--run.threads", "1"},
                     {"--run.device", "cpu"},
                     {"--optim.lr", "3e-3"}});
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

}  // namespace

// r ranks with micro-batch b give the same bits as one rank with r micro-steps of b: a step's
// micro-batch gradients are summed exactly, wherever they are computed.
TEST(Pipeline, DataParallelEqualsOneRankWithAccumulation) {
  ASSERT_EQ(world().size(), 4) << "run under mpiexec -n 4";
  SharedDir dir(world());
  make_corpora(world(), dir / "corpus", 1);
  {
    Config c = tiny_config(dir / "corpus", dir / "parallel", {"d0"});
    c.run.ranks_per_elm = 4;
    RunContext ctx = make_context(c, world(), btm::test::backends());
    ASSERT_EQ(run_seed_phase(ctx), PhaseResult::Done);
    run_branch_phase(ctx, {"d0"});
    ASSERT_EQ(run_train_phase(ctx, {"d0"}), PhaseResult::Done);
  }
  std::unique_ptr<MpiComm> self = world().split(world().rank(), 0);
  if (world().rank() == 0) {
    Config c = tiny_config(dir / "corpus", dir / "single", {"d0"});
    c.data.accum = 4;
    RunContext ctx = make_context(c, *self, btm::test::backends());
    ASSERT_EQ(run_seed_phase(ctx), PhaseResult::Done);
    run_branch_phase(ctx, {"d0"});
    ASSERT_EQ(run_train_phase(ctx, {"d0"}), PhaseResult::Done);
    for (const char* n : {"seed", "d0"}) {
      const Checkpoint a = load_checkpoint(checkpoint_file(dir / "parallel", n));
      const Checkpoint b = load_checkpoint(checkpoint_file(dir / "single", n));
      EXPECT_EQ(a.params, b.params) << n;
      EXPECT_EQ(a.adam_m, b.adam_m) << n;
      EXPECT_EQ(a.adam_v, b.adam_v) << n;
      EXPECT_EQ(a.tokens, b.tokens) << n;
      EXPECT_EQ(a.batch, (GlobalBatch{2, 4})) << n;
    }
    EXPECT_GT(max_abs_diff(params_of(dir / "single", "d0"), params_of(dir / "single", "seed")),
              1e-3);  // it did train
  }
  world().barrier();
}

// The paper's compute matching on 1, 2 and 4 ranks: the same config gives the same bits for
// the seed, every ELM and the dense baseline, and the budget of the rule: every model path
// run.steps steps, an ELM's global batch r x A micro-batches, the seed's and the dense's K
// times that, forest tokens = dense tokens. A dense model trained from the initialisation
// equals the one that continues the seed.
TEST(Pipeline, ComputeMatchingIsTheSameBitsOnOneTwoAndFourRanks) {
  SharedDir dir(world());
  make_corpora(world(), dir / "corpus", 2);
  const Args common = flags({{"--data.batch", "2"},
                             {"--data.accum", "2"},
                             {"--run.steps", "6"},
                             {"--run.seed_share", "0.5"},
                             {"--run.dense", "true"},
                             {"--run.checkpoint_every", "2"}});
  auto args = [&](const std::string& run) {
    Args more = common;
    more.push_back("--no-eval");
    return tiny_forest_args(dir, "d0,d1", run, more);
  };
  std::unique_ptr<MpiComm> one = world().split(world().rank() == 0 ? 0 : 1, world().rank());
  std::unique_ptr<MpiComm> two = world().split(world().rank() < 2 ? 0 : 1, world().rank());
  EXPECT_EQ(cmd_run(args("run4"), world(), btm::test::backends()), kExitOk);
  if (world().rank() < 2) {
    EXPECT_EQ(cmd_run(args("run2"), *two, btm::test::backends()), kExitOk);
  }
  if (world().rank() == 0) {
    EXPECT_EQ(cmd_run(args("run1"), *one, btm::test::backends()), kExitOk);
    // The dense baseline alone, in a forest without a seed: from the initialisation.
    EXPECT_EQ(cmd_dense(tiny_forest_args(dir, "d0,d1", "dense_only", common), *one,
                        btm::test::backends()),
              kExitOk);
  }
  world().barrier();
  if (world().rank() == 0) {
    const std::int64_t T = 16, elm_sequences = 1 * 2 * 2, world_sequences = 2 * elm_sequences;
    for (const char* n : {"seed", "d0", "d1", "dense"}) {
      const Checkpoint ref = load_checkpoint(checkpoint_file(dir / "run1", n));
      for (const char* run : {"run2", "run4"}) {
        const Checkpoint c = load_checkpoint(checkpoint_file(dir / run, n));
        EXPECT_EQ(c.params, ref.params) << run << " " << n;
        EXPECT_EQ(c.adam_m, ref.adam_m) << run << " " << n;
        EXPECT_EQ(c.adam_v, ref.adam_v) << run << " " << n;
      }
    }
    EXPECT_EQ(load_checkpoint(checkpoint_file(dir / "dense_only", "dense")).params,
              params_of(dir / "run1", "dense"));
    const Forest f = load_forest(dir / "run4");
    const ModelRecord& seed = *f.find("seed");
    const ModelRecord& dense = *f.find("dense");
    EXPECT_EQ(seed.steps, 3);
    EXPECT_EQ(seed.global_batch, world_sequences);
    EXPECT_EQ(seed.tokens, 3 * world_sequences * T);
    EXPECT_EQ(dense.steps, 6);
    EXPECT_EQ(dense.global_batch, world_sequences);
    EXPECT_EQ(dense.tokens, 6 * world_sequences * T);
    std::int64_t forest_tokens = seed.tokens;
    for (const char* n : {"d0", "d1"}) {
      const ModelRecord& elm = *f.find(n);
      EXPECT_EQ(elm.steps, 6) << n;
      EXPECT_EQ(elm.global_batch, elm_sequences) << n;
      EXPECT_EQ(elm.tokens, seed.tokens + 3 * elm_sequences * T) << n;
      EXPECT_GT(elm.flops, 0) << n;
      forest_tokens += elm.tokens - seed.tokens;
    }
    EXPECT_EQ(forest_tokens, dense.tokens);
  }
  world().barrier();
}

// A world that cannot form the seed's global batch is refused before anything is written, with
// the world sizes that can.
TEST(Pipeline, AWorldThatCannotFormTheBatchIsRefusedBeforeAnyWork) {
  SharedDir dir(world());
  make_corpora(world(), dir / "corpus", 3);
  std::unique_ptr<MpiComm> two = world().split(world().rank() < 2 ? 0 : 1, world().rank());
  if (world().rank() < 2) {
    // K r A = 3 x 1 x 1: 1 or 3 ranks, not 2.
    const Args a = tiny_forest_args(dir, "d0,d1,d2", "refused", flags({{"--run.steps", "4"}}));
    try {
      cmd_run(a, *two, btm::test::backends());
      ADD_FAILURE() << "2 ranks accepted for a global batch of 3 micro-batches";
    } catch (const InputError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("2 ranks cannot form"), std::string::npos) << what;
      EXPECT_NE(what.find("start 1 or 3 ranks"), std::string::npos) << what;
    }
    EXPECT_FALSE(fs::exists(dir / "refused"));
  }
  world().barrier();
}

// A new domain branched from an average gets an ELM's global batch and steps: it re-enters the
// schedule at the seed's share and trains S - seed steps.
TEST(Pipeline, ANewDomainGetsAnElmsBatchAndSteps) {
  SharedDir dir(world());
  make_corpora(world(), dir / "corpus", 3);
  const Args common = flags({{"--data.batch", "2"},
                             {"--run.steps", "6"},
                             {"--run.seed_share", "0.5"},
                             {"--run.ranks_per_elm", "2"},
                             {"--eval.prior_blocks", "4"}});
  Args run = common;
  run.push_back("--no-eval");
  ASSERT_EQ(cmd_run(tiny_forest_args(dir, "d0,d1", "run", run), world(), btm::test::backends()),
            kExitOk);
  Args branch = common;
  branch.insert(branch.end(), {"--new-domain", "d2", "--weights", "1,1"});
  ASSERT_EQ(
      cmd_branch(tiny_forest_args(dir, "d0,d1", "run", branch), world(), btm::test::backends()),
      kExitOk);
  Checkpoint d2 = load_checkpoint(checkpoint_file(dir / "run", "d2"));
  EXPECT_EQ(d2.step, 3);
  EXPECT_EQ(d2.target_steps, 6);
  EXPECT_EQ(d2.batch, (GlobalBatch{2, 2}));  // r x A = 2 micro-batches of 2
  // Its parameters are the exact average of the parents, as eval's average:uniform forms it.
  const std::vector<double> half = {0.5, 0.5};
  const Checkpoint avg =
      average_checkpoints({checkpoint_file(dir / "run", "d0"), checkpoint_file(dir / "run", "d1")},
                          half, d2.model, true);
  EXPECT_EQ(d2.params, avg.params);
  Args train = common;
  train.push_back("--resume");
  ASSERT_EQ(
      cmd_train(tiny_forest_args(dir, "d0,d1,d2", "run", train), world(), btm::test::backends()),
      kExitOk);
  d2 = load_checkpoint(checkpoint_file(dir / "run", "d2"));
  EXPECT_EQ(d2.step, 6);
  const Forest f = load_forest(dir / "run");
  EXPECT_EQ(f.find("d2")->global_batch, 4);
  EXPECT_EQ(f.find("d2")->parents, (std::vector<std::string>{"d0", "d1"}));
  world().barrier();
}

// 2 groups x 2 ranks train two ELMs; each equals that ELM trained alone by 2 ranks from the
// same seed. The world communicator carries no byte while the groups train.
TEST(Pipeline, GroupsAreIndependentAndSilentOnTheWorld) {
  SharedDir dir(world());
  make_corpora(world(), dir / "corpus", 2);
  const fs::path forest = dir / "forest";
  std::uint64_t world_bytes = 1;
  {
    Config c = tiny_config(dir / "corpus", forest, {"d0", "d1"});
    c.run.ranks_per_elm = 2;
    RunContext ctx = make_context(c, world(), btm::test::backends());
    ASSERT_EQ(run_seed_phase(ctx), PhaseResult::Done);
    run_branch_phase(ctx, {"d0", "d1"});
    ASSERT_EQ(run_train_phase(ctx, {"d0", "d1"}, &world_bytes), PhaseResult::Done);
  }
  EXPECT_EQ(world_bytes, 0u) << "rank " << world().rank()
                             << " sent bytes on the world communicator";

  const int half = world().rank() / 2;
  std::unique_ptr<MpiComm> pair = world().split(half, world().rank());
  const std::string domain = "d" + std::to_string(half);
  const fs::path alone = dir / ("alone" + std::to_string(half));
  {
    Config c = tiny_config(dir / "corpus", alone, {domain});
    c.run.ranks_per_elm = 2;
    c.run.seed_checkpoint = checkpoint_file(forest, "seed").string();  // the same seed
    RunContext ctx = make_context(c, *pair, btm::test::backends());
    ASSERT_EQ(run_seed_phase(ctx), PhaseResult::Done);
    run_branch_phase(ctx, {domain});
    ASSERT_EQ(run_train_phase(ctx, {domain}), PhaseResult::Done);
  }
  if (pair->rank() == 0) {
    EXPECT_EQ(params_of(forest, domain), params_of(alone, domain));
  }
  world().barrier();
}

// seed -> branch -> train -> merge on 3 domains; the manifest has the lineage; a rerun trains
// nothing; a run stopped half way and continued equals an uninterrupted one bit for bit, also
// when continued on another rank count (each model keeps the global batch it started with).
TEST(Pipeline, EndToEndForestRerunAndRestart) {
  SharedDir dir(world());
  make_corpora(world(), dir / "corpus", 3);
  // The ELMs train one after another on one group of 4 ranks (global batch 4 x 2 = 8).
  auto args = [&](const std::string& run, const std::string& ranks_per_elm = "4",
                  const std::string& batch = "2") {
    Args more = flags({{"--run.ranks_per_elm", ranks_per_elm},
                       {"--data.batch", batch},
                       {"--run.steps", "8"},
                       {"--run.seed_share", "0.5"},
                       {"--run.checkpoint_every", "3"},
                       {"--run.dense", "false"},
                       {"--eval.blocks", "4"},
                       {"--eval.prior_blocks", "4"}});
    more.push_back("--no-eval");
    return tiny_forest_args(dir, "d0,d1,d2", run, more);
  };
  ASSERT_EQ(cmd_run(args("full"), world(), btm::test::backends()), kExitOk);
  if (world().rank() == 0) {
    const Forest f = load_forest(dir / "full");
    ASSERT_EQ(f.elms().size(), 3u);
    for (const ModelRecord* r : f.elms()) {
      EXPECT_EQ(r->status, ModelStatus::trained) << r->name;
      EXPECT_EQ(r->parents, std::vector<std::string>{"seed"});
      EXPECT_EQ(r->steps, 8);
      EXPECT_EQ(r->domains, std::vector<std::string>{r->name});
    }
    EXPECT_EQ(f.find("seed")->steps, 4);
    // Trained branches hold their own state; the run's phases are timed.
    for (const char* n : {"d0", "d1", "d2"})
      EXPECT_EQ(peek_checkpoint(checkpoint_file(dir / "full", n)).state_from, "") << n;
    std::vector<std::string> phases;
    for (const PhaseTime& t : f.timing) {
      phases.push_back(t.phase);
      EXPECT_GE(t.wall_s, t.train_s) << t.phase;
      EXPECT_GE(t.train_s, 0.0) << t.phase;
    }
    EXPECT_EQ(phases,
              (std::vector<std::string>{"start", "seed", "branch", "elms", "dense", "eval"}));
    EXPECT_GT(f.timing[3].train_s, 0.0);
    EXPECT_EQ(f.timing[2].train_s, 0.0);
  }
  // Rerun: nothing is retrained (checkpoint files are not rewritten).
  std::vector<fs::file_time_type> before;
  for (const char* n : {"seed", "d0", "d1", "d2"})
    before.push_back(fs::last_write_time(checkpoint_file(dir / "full", n)));
  world().barrier();
  ASSERT_EQ(cmd_run(args("full"), world(), btm::test::backends()), kExitOk);
  int i = 0;
  for (const char* n : {"seed", "d0", "d1", "d2"})
    EXPECT_EQ(fs::last_write_time(checkpoint_file(dir / "full", n)),
              before[static_cast<std::size_t>(i++)])
        << n;

  // Stopped after 3 steps of every model (exit code 75), then continued: same bytes.
  Args limited = args("restart");
  limited.insert(limited.end(), {"--max-steps-per-run", "3"});
  int stops = 0;
  while (cmd_run(limited, world(), btm::test::backends()) == kExitPreempted) ++stops;
  EXPECT_GE(stops, 2);
  if (world().rank() == 0) {
    for (const char* n : {"seed", "d0", "d1", "d2"}) {
      EXPECT_EQ(params_of(dir / "full", n), params_of(dir / "restart", n)) << n;
      // The metrics too, the validation table (every step here: a quarter of 4 ELM steps) with
      // them: validation does not disturb what a resume continues.
      const MetricsLog a = MetricsLog::load(metrics_file(dir / "full", n));
      const MetricsLog b = MetricsLog::load(metrics_file(dir / "restart", n));
      ASSERT_EQ(a.rows().size(), b.rows().size()) << n;
      for (std::size_t i = 0; i < a.rows().size(); ++i)
        EXPECT_EQ(a.rows()[i].loss, b.rows()[i].loss) << n << " row " << i;
      ASSERT_EQ(a.validation().size(), 4u) << n;
      ASSERT_EQ(b.validation().size(), a.validation().size()) << n;
      for (std::size_t i = 0; i < a.validation().size(); ++i) {
        EXPECT_EQ(a.validation()[i].step, b.validation()[i].step) << n << " row " << i;
        EXPECT_EQ(a.validation()[i].loss, b.validation()[i].loss) << n << " row " << i;
      }
    }
  }

  // Continue on another rank count: 4 ranks train the seed and d0 half way, then one rank
  // finishes everything with 4 micro-steps per step (the global batch the ELMs started with).
  Args half = args("ranks");
  half.insert(half.end(), {"--max-steps-per-run", "2"});
  EXPECT_EQ(cmd_run(half, world(), btm::test::backends()),
            kExitPreempted);  // the seed, 2 of 4 steps
  EXPECT_EQ(cmd_run(half, world(), btm::test::backends()),
            kExitPreempted);  // the seed is done, d0 at 6 of 8
  std::unique_ptr<MpiComm> self = world().split(world().rank(), 0);
  if (world().rank() == 0) {
    EXPECT_EQ(load_checkpoint(checkpoint_file(dir / "ranks", "d0")).step, 6);
    // The branches not trained yet refer to the seed's state instead of copying it.
    const Forest f = load_forest(dir / "ranks");
    for (const char* n : {"d1", "d2"}) {
      EXPECT_EQ(peek_checkpoint(checkpoint_file(dir / "ranks", n)).state_from, "seed.h5") << n;
      EXPECT_EQ(f.find(n)->state_from, "seed.h5") << n;
    }
    EXPECT_EQ(f.find("d0")->state_from, "");
    EXPECT_EQ(cmd_run(args("ranks", "1", "2"), *self, btm::test::backends()), kExitOk);
    for (const char* n : {"d0", "d1", "d2"}) {
      const Checkpoint c = load_checkpoint(checkpoint_file(dir / "ranks", n));
      EXPECT_EQ(c.step, 8) << n;
      EXPECT_EQ(c.tokens, load_checkpoint(checkpoint_file(dir / "full", n)).tokens) << n;
      EXPECT_EQ(c.params, params_of(dir / "full", n)) << n;
    }
  }
  world().barrier();
}

// A stop signal mid-training checkpoints, exits with the preemption code, and the rerun
// completes the forest.
TEST(Pipeline, StopSignalCheckpointsAndRerunCompletes) {
  SharedDir dir(world());
  make_corpora(world(), dir / "corpus", 2);
  Args a = {"--data.corpus",   (dir / "corpus").string(),
            "--data.domains",  "d0,d1",
            "--run.dir",       (dir / "run").string(),
            "--model.n_layer", "1",
            "--model.d_model", "16",
            "--model.n_head",  "2",
            "--model.context", "8",
            "--run.steps",     "6",
            "--data.accum",    "2",
            "--run.threads",   "1",
            "--run.device",    "cpu",
            "--run.dense",     "false",
            "--no-eval"};
  request_stop();
  EXPECT_EQ(cmd_run(a, world(), btm::test::backends()), kExitPreempted);
  clear_stop();
  if (world().rank() == 0) {
    const Checkpoint seed = load_checkpoint(checkpoint_file(dir / "run", "seed"));
    EXPECT_EQ(seed.step, 0);  // stopped before the first step, but checkpointed
  }
  EXPECT_EQ(cmd_run(a, world(), btm::test::backends()), kExitOk);
  if (world().rank() == 0) {
    const Forest f = load_forest(dir / "run");
    for (const ModelRecord* r : f.elms()) EXPECT_EQ(r->status, ModelStatus::trained);
    EXPECT_EQ(MetricsLog::read(metrics_file(dir / "run", "d1")).back().step, 6);
  }
  world().barrier();
}

namespace {

// The mean loss per token of checkpoint `model` on the first `blocks` blocks of T + 1 tokens of
// `domain`'s valid split, from the CPU engine's token log-probabilities on one rank, in chunks
// of `batch` blocks.
double loss_by_hand(const fs::path& run, const std::string& model, const fs::path& corpus,
                    const std::string& domain, std::size_t blocks, int batch) {
  const Checkpoint c = load_checkpoint(checkpoint_file(run, model));
  EngineOptions options;
  options.threads = 1;
  options.max_batch = batch;
  std::unique_ptr<Engine> engine =
      btm::test::backends().resolve(Device::cpu).make_engine(c.model, options);
  engine->set_params(c.params);
  const DomainCorpus d = load_corpus(corpus_path(corpus, domain), c.model.vocab_size);
  const TokenArray& valid = d.split(Split::Valid);
  const int T = c.model.context;
  double sum = 0;
  for (std::size_t first = 0; first < blocks; first += static_cast<std::size_t>(batch)) {
    const int n =
        static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(batch), blocks - first));
    std::vector<std::int32_t> inputs(static_cast<std::size_t>(n) * T), targets(inputs.size());
    for (int b = 0; b < n; ++b)
      for (int t = 0; t < T; ++t) {
        const std::size_t at = (first + static_cast<std::size_t>(b)) * static_cast<std::size_t>(T) +
                               static_cast<std::size_t>(t);
        inputs[static_cast<std::size_t>(b * T + t)] = valid[at];
        targets[static_cast<std::size_t>(b * T + t)] = valid[at + 1];
      }
    std::vector<float> logprobs(inputs.size());
    engine->token_logprobs({inputs.data(), targets.data(), n, T}, logprobs.data());
    for (float lp : logprobs) sum += lp;
  }
  return -sum / static_cast<double>(blocks * static_cast<std::size_t>(T));
}

}  // namespace

// Validation during training (run.eval_every 3, run.eval_blocks 3): after steps 3 and 4 of the
// seed (its last), 6 and 8 of the ELMs and the dense baseline; each model on its own domain, the
// seed and dense on both. The last row of each is the loss of its final checkpoint worked out
// by hand; the tables are the same bits on 2 ranks (one group training both ELMs) and on 4 (two
// groups); and validating changes no bit of any model (run.eval_blocks 0).
TEST(Pipeline, ValidationIsTheEnginesLossOnTheFirstValidBlocks) {
  SharedDir dir(world());
  make_corpora(world(), dir / "corpus", 2);
  auto args = [&](const std::string& run, const std::string& blocks) {
    Args more = flags({{"--data.batch", "2"},
                       {"--run.steps", "8"},
                       {"--run.seed_share", "0.5"},
                       {"--run.ranks_per_elm", "2"},
                       {"--run.eval_every", "3"},
                       {"--run.eval_blocks", blocks},
                       {"--run.dense", "true"}});
    more.push_back("--no-eval");
    return tiny_forest_args(dir, "d0,d1", run, more);
  };
  std::unique_ptr<MpiComm> two = world().split(world().rank() < 2 ? 0 : 1, world().rank());
  ASSERT_EQ(cmd_run(args("run4", "3"), world(), btm::test::backends()), kExitOk);
  ASSERT_EQ(cmd_run(args("off", "0"), world(), btm::test::backends()), kExitOk);
  if (world().rank() < 2) {
    ASSERT_EQ(cmd_run(args("run2", "3"), *two, btm::test::backends()), kExitOk);
  }
  world().barrier();
  if (world().rank() == 0) {
    const std::map<std::string, std::vector<std::string>> domains = {
        {"seed", {"d0", "d1"}}, {"d0", {"d0"}}, {"d1", {"d1"}}, {"dense", {"d0", "d1"}}};
    const std::map<std::string, std::vector<std::int64_t>> steps = {
        {"seed", {3, 4}}, {"d0", {6, 8}}, {"d1", {6, 8}}, {"dense", {6, 8}}};
    for (const auto& [model, names] : domains) {
      const MetricsLog log = MetricsLog::load(metrics_file(dir / "run4", model));
      EXPECT_EQ(log.validation_domains(), names) << model;
      EXPECT_EQ(log.validation_tokens(), std::vector<std::int64_t>(names.size(), 3 * 16)) << model;
      std::vector<std::int64_t> at;
      for (const ValidationRow& r : log.validation()) at.push_back(r.step);
      EXPECT_EQ(at, steps.at(model)) << model;
      ASSERT_FALSE(log.validation().empty()) << model;
      const ValidationRow& last = log.validation().back();
      EXPECT_EQ(last.tokens, static_cast<std::int64_t>(
                                 load_checkpoint(checkpoint_file(dir / "run4", model)).tokens));
      for (std::size_t d = 0; d < names.size(); ++d) {
        const double expect = loss_by_hand(dir / "run4", model, dir / "corpus", names[d], 3, 2);
        EXPECT_DOUBLE_EQ(last.loss[d], expect) << model << " on " << names[d];
        EXPECT_GT(last.loss[d], 0.0);
      }
      // The same bits on 2 ranks; no validation table without validation.
      const MetricsLog other = MetricsLog::load(metrics_file(dir / "run2", model));
      ASSERT_EQ(other.validation().size(), log.validation().size()) << model;
      for (std::size_t i = 0; i < log.validation().size(); ++i)
        EXPECT_EQ(other.validation()[i].loss, log.validation()[i].loss) << model << " row " << i;
      EXPECT_TRUE(MetricsLog::load(metrics_file(dir / "off", model)).validation().empty());
      const Checkpoint with = load_checkpoint(checkpoint_file(dir / "run4", model));
      const Checkpoint without = load_checkpoint(checkpoint_file(dir / "off", model));
      EXPECT_EQ(with.params, without.params) << model;
      EXPECT_EQ(with.adam_m, without.adam_m) << model;
      EXPECT_EQ(with.adam_v, without.adam_v) << model;
      EXPECT_EQ(with.sampler_position, without.sampler_position) << model;
    }
    // The ELMs learn their domain: validation loss falls from the seed's.
    const MetricsLog seed = MetricsLog::load(metrics_file(dir / "run4", "seed"));
    const MetricsLog d0 = MetricsLog::load(metrics_file(dir / "run4", "d0"));
    EXPECT_LT(d0.validation().back().loss[0], seed.validation().back().loss[0]);
  }
  world().barrier();
}

namespace {

void expect_close(const std::vector<double>& a, const std::vector<double>& b, double rel,
                  const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i])) {
      EXPECT_TRUE(std::isnan(b[i])) << what << "[" << i << "]";
      continue;
    }
    EXPECT_LE(std::abs(a[i] - b[i]), rel * std::abs(a[i]))
        << what << "[" << i << "]: " << a[i] << " vs " << b[i];
  }
}

}  // namespace

// The collective phase gives the same eval.h5 numbers on 1, 2 and 4 ranks (and on 2 groups of
// 2 ranks), to the last bit: every log-probability comes from the same computation whatever
// rank makes it, and parameter averages are exact fixed-point sums.
TEST(Pipeline, EvalIsTheSameOnOneTwoAndFourRanks) {
  SharedDir dir(world());
  make_corpora(world(), dir / "corpus", 4);
  const Args common = flags({{"--data.eval_domains", "d3"},
                             {"--data.batch", "2"},
                             {"--data.accum", "4"},
                             {"--run.steps", "6"},
                             {"--run.seed_share", "0.5"},
                             {"--run.dense", "true"},
                             {"--eval.blocks", "5"},
                             {"--eval.prior_blocks", "6"},
                             {"--eval.prior_batch", "2"}});
  Args train_only = common;
  train_only.push_back("--no-eval");
  ASSERT_EQ(
      cmd_run(tiny_forest_args(dir, "d0,d1,d2", "run", train_only), world(), btm::test::backends()),
      kExitOk);
  if (world().rank() == 0)
    for (const char* copy : {"run1", "run2", "run4", "run2x2"})
      fs::copy(dir / "run", dir / copy, fs::copy_options::recursive);
  world().barrier();
  auto eval_args = [&](const std::string& run, const std::string& ranks_per_elm) {
    Args more = common;
    more.insert(more.end(), {"--run.ranks_per_elm", ranks_per_elm});
    return tiny_forest_args(dir, "d0,d1,d2", run, more);
  };
  std::unique_ptr<MpiComm> one = world().split(world().rank() == 0 ? 0 : 1, world().rank());
  std::unique_ptr<MpiComm> two = world().split(world().rank() < 2 ? 0 : 1, world().rank());
  if (world().rank() == 0) {
    EXPECT_EQ(cmd_eval(eval_args("run1", "1"), *one, btm::test::backends()), kExitOk);
  }
  if (world().rank() < 2) {
    EXPECT_EQ(cmd_eval(eval_args("run2", "1"), *two, btm::test::backends()), kExitOk);
  }
  EXPECT_EQ(cmd_eval(eval_args("run4", "1"), world(), btm::test::backends()), kExitOk);
  EXPECT_EQ(cmd_eval(eval_args("run2x2", "2"), world(), btm::test::backends()), kExitOk);
  // btm run's own evaluation takes the models it trained from memory instead of reading their
  // checkpoints: the same results as btm eval.
  ASSERT_EQ(
      cmd_run(tiny_forest_args(dir, "d0,d1,d2", "runeval", common), world(), btm::test::backends()),
      kExitOk);
  if (world().rank() == 0) {
    const EvalResults ref = read_eval_file(eval_file(dir / "run1"));
    // 3 ELMs, top-1..3, uniform mixture, uniform prior, 3 averages, dense; 4 domains.
    ASSERT_EQ(ref.methods.size(), 3u + 3u + 2u + 3u + 1u);
    EXPECT_EQ(ref.methods.front(), "elm:d0");
    EXPECT_EQ(ref.methods.back(), "dense");
    ASSERT_EQ(ref.tokens.size(), 4u);
    for (std::int64_t t : ref.tokens) EXPECT_EQ(t, 5 * 16);
    for (double p : ref.perplexity) {
      EXPECT_TRUE(std::isfinite(p));
      EXPECT_GT(p, 1.0);
    }
    // The argmax average is the one ELM its weights pick: the same perplexity, exactly; the
    // uniform average of 3 trained ELMs is a model of its own.
    const std::size_t D = ref.tokens.size(), K = 3;
    const auto row = [&](const std::string& name) {
      return static_cast<std::size_t>(std::find(ref.methods.begin(), ref.methods.end(), name) -
                                      ref.methods.begin());
    };
    for (std::size_t d = 0; d < D; ++d) {
      const auto prior = ref.priors.begin() + static_cast<std::ptrdiff_t>(d * K);
      const auto best = static_cast<std::size_t>(std::max_element(prior, prior + K) - prior);
      EXPECT_EQ(ref.perplexity[row("average:argmax") * D + d], ref.perplexity[best * D + d]) << d;
      for (std::size_t j = 0; j < K; ++j)
        EXPECT_NE(ref.perplexity[row("average:uniform") * D + d], ref.perplexity[j * D + d]);
    }
    for (const char* run : {"run2", "run4", "run2x2", "runeval"}) {
      const EvalResults other = read_eval_file(eval_file(dir / run));
      EXPECT_EQ(other.methods, ref.methods) << run;
      EXPECT_EQ(other.tokens, ref.tokens) << run;
      expect_close(ref.perplexity, other.perplexity, 0.0, run);
      expect_close(ref.priors, other.priors, 0.0, run);
      expect_close(ref.average_weights, other.average_weights, 0.0, run);
    }
  }
  world().barrier();
}

// Decisions that gate collectives come from rank 0 only: every rank gets rank 0's answer even
// when its own view differs, and an error on rank 0 reaches every rank.
TEST(Pipeline, DecisionsAreTakenOnRankZero) {
  int asked = 0;
  const bool answer = decided_by_root(world(), [&] {
    ++asked;
    return world().rank() == 0;  // only rank 0 would say yes
  });
  EXPECT_TRUE(answer);
  EXPECT_EQ(asked, world().rank() == 0 ? 1 : 0);
  const std::vector<std::string> names = listed_by_root(world(), [&] {
    return std::vector<std::string>{"a", "rank" + std::to_string(world().rank())};
  });
  EXPECT_EQ(names, (std::vector<std::string>{"a", "rank0"}));
  EXPECT_THROW(
      decided_by_root(world(),
                      [&]() -> bool { throw InputError("the forest manifest is unreadable"); }),
      InputError);
}

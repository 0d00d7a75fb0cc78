// btm train: the forest's unfinished ELMs, one group each, in waves.
#include <filesystem>

#include "btm/app/cli.hpp"
#include "btm/app/command_context.hpp"
#include "btm/app/commands.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/forest.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/util/error.hpp"

namespace btm {

namespace fs = std::filesystem;

int cmd_train(const Args& args, MpiComm& world, const Backends& backends) {
  Config config;
  bool resume = false;
  std::int64_t step_limit = 0;
  po::options_description options = step_limit_option(step_limit);
  // clang-format off
  options.add_options()("resume", po::bool_switch(&resume),
                        "continue ELMs that already have a checkpoint (without it, an existing "
                        "partly trained checkpoint is an error, to protect it)");
  // clang-format on
  parse_command(
      "train",
      "Train the ELMs of data.domains, one group of run.ranks_per_elm ranks each, in waves.\n"
      "An ELM without a checkpoint starts from the seed if the forest has one, else from\n"
      "the initialisation (a plain LM on that domain).",
      args, options, &config, world.rank() == 0);
  const std::vector<std::string> names = elm_names(config);
  RunContext ctx =
      prepare_context("train", config, world, backends, step_limit, {names, true, false});
  collective_check(world, [&] {
    for (const std::string& name : names) {
      const fs::path file = checkpoint_file(ctx.run_dir, name);
      // Trained before (it has metrics) but not finished: continuing must be asked for.
      if (!resume && fs::exists(file) && fs::exists(metrics_file(ctx.run_dir, name))) {
        const CheckpointInfo c = peek_checkpoint(file);
        if (!c.finished())
          throw InputError(file.string() + " exists at step " + std::to_string(c.step) + " of " +
                           std::to_string(c.target_steps) +
                           ": pass --resume to continue it, or choose another run.dir");
      }
    }
  });
  if (config.run.split == SplitMode::random) make_random_split(ctx);
  if (!decided_by_root(ctx.world,
                       [&] { return fs::exists(checkpoint_file(ctx.run_dir, "seed")); })) {
    // No seed: every ELM starts from the initialisation (seed of zero steps).
    ctx.config.run.seed_share = 0;
    const PhaseResult seeded = run_seed_phase(ctx);
    ctx.config = config;
    if (seeded == PhaseResult::Stopped) return stopped_exit(ctx);
  }
  run_branch_phase(ctx, names);
  return run_train_phase(ctx, names) == PhaseResult::Stopped ? stopped_exit(ctx) : kExitOk;
}

}  // namespace btm

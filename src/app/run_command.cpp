// btm run: the whole pipeline on one forest directory.
#include <iostream>

#include "btm/app/cli.hpp"
#include "btm/app/command_context.hpp"
#include "btm/app/commands.hpp"
#include "btm/eval/evaluate.hpp"
#include "btm/method/budget.hpp"
#include "btm/method/rank_layout.hpp"
#include "btm/pipeline/phase_times.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/util/error.hpp"

namespace btm {

int cmd_run(const Args& args, MpiComm& world, const Backends& backends) {
  Config config;
  bool dry_run = false;
  bool skip_eval = false;
  std::int64_t step_limit = 0;
  po::options_description options = step_limit_option(step_limit);
  // clang-format off
  options.add_options()("dry-run", po::bool_switch(&dry_run), "print the plan and exit")(
      "no-eval", po::bool_switch(&skip_eval), "stop after training (no evaluation phase)");
  // clang-format on
  parse_command(
      "run",
      "The whole pipeline on one forest directory: seed -> branch -> train -> merge ->\n"
      "dense baseline -> evaluation. Run it again after a crash or a preemption: finished\n"
      "models are kept, unfinished ones resume from their last checkpoint.",
      args, options, &config, world.rank() == 0);
  const std::vector<std::string> names = elm_names(config);
  const Budget budget = make_budget(config, static_cast<int>(names.size()));
  check_world(budget, world.size());
  const RankLayout layout = plan_layout(world.size(), config.run.ranks_per_elm, names);
  if (world.rank() == 0) std::cout << describe_plan(budget, layout) << std::flush;
  if (dry_run) return kExitOk;
  PreflightPlan plan{names, true, !skip_eval};
  plan.writes.push_back("seed");
  if (config.run.dense) plan.writes.push_back("dense");
  PhaseClock clock;
  RunContext ctx = prepare_context("run", config, world, backends, step_limit, plan);
  ctx.keep_seed_state = true;
  ctx.keep_trained_params = !skip_eval;
  ctx.ahead = {true, config.run.dense, !skip_eval};
  if (config.run.split == SplitMode::random) make_random_split(ctx);
  clock.lap("start", ctx);
  if (run_seed_phase(ctx) == PhaseResult::Stopped) return stopped_exit(ctx);
  clock.lap("seed", ctx);
  run_branch_phase(ctx, names);
  clock.lap("branch", ctx);
  if (run_train_phase(ctx, names) == PhaseResult::Stopped) return stopped_exit(ctx);
  clock.lap("elms", ctx);
  if (config.run.dense && run_dense_phase(ctx) == PhaseResult::Stopped) return stopped_exit(ctx);
  clock.lap("dense", ctx);
  ctx.engine.reset();  // the training engine and its copy of the seed: evaluation has its own
  if (!skip_eval) run_eval_phase(ctx);
  clock.lap("eval", ctx);
  record_phase_times(ctx, clock.phases());
  if (ctx.leader()) std::cout << "done: forest in " << ctx.run_dir.string() << std::endl;
  return kExitOk;
}

}  // namespace btm

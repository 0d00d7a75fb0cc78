// btm dense: the compute-matched dense baseline alone.

#include "btm/app/cli.hpp"
#include "btm/app/command_context.hpp"
#include "btm/app/commands.hpp"
#include "btm/method/budget.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/util/error.hpp"

namespace btm {

int cmd_dense(const Args& args, MpiComm& world, const Backends& backends) {
  Config config;
  std::int64_t step_limit = 0;
  parse_command(
      "dense",
      "Train the dense baseline: the forest's total budget (steps x global batch) on all\n"
      "ranks over all train domains, so forest and baseline are compute-matched.",
      args, step_limit_option(step_limit), &config, world.rank() == 0);
  check_world(make_budget(config, static_cast<int>(config.data.domains.size())), world.size());
  RunContext ctx =
      prepare_context("dense", config, world, backends, step_limit, {{"dense"}, true, false});
  return run_dense_phase(ctx) == PhaseResult::Stopped ? stopped_exit(ctx) : kExitOk;
}

}  // namespace btm

// btm seed: the seed LM alone.

#include "btm/app/cli.hpp"
#include "btm/app/command_context.hpp"
#include "btm/app/commands.hpp"
#include "btm/method/budget.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/util/error.hpp"

namespace btm {

int cmd_seed(const Args& args, MpiComm& world, const Backends& backends) {
  Config config;
  std::int64_t step_limit = 0;
  parse_command("seed", "Train the seed LM on all train domains with the whole world.", args,
                step_limit_option(step_limit), &config, world.rank() == 0);
  check_world(make_budget(config, static_cast<int>(config.data.domains.size())), world.size());
  RunContext ctx =
      prepare_context("seed", config, world, backends, step_limit, {{"seed"}, true, false});
  return run_seed_phase(ctx) == PhaseResult::Stopped ? stopped_exit(ctx) : kExitOk;
}

}  // namespace btm

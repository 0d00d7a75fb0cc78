// btm layout: the compute plan and the rank layout, without running anything.
#include <iostream>

#include "btm/app/cli.hpp"
#include "btm/app/command_context.hpp"
#include "btm/app/commands.hpp"
#include "btm/method/budget.hpp"
#include "btm/method/rank_layout.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/util/error.hpp"

namespace btm {

int cmd_layout(const Args& args, MpiComm& world, const Backends&) {
  Config config;
  int world_size = 0;
  po::options_description options("Options");
  // clang-format off
  options.add_options()("world", po::value(&world_size),
                        "plan for this many ranks (default: the ranks started)");
  // clang-format on
  parse_command(
      "layout",
      "Print the rank layout (which ranks train which ELM, in which wave) and the step and\n"
      "token budget of every phase, without running anything.",
      args, options, &config, world.rank() == 0);
  if (world_size == 0) world_size = world.size();
  const std::vector<std::string> names = elm_names(config);
  const Budget budget = make_budget(config, static_cast<int>(names.size()));
  check_world(budget, world_size);
  const RankLayout layout = plan_layout(world_size, config.run.ranks_per_elm, names);
  if (world.rank() == 0) std::cout << describe_plan(budget, layout);
  return kExitOk;
}

}  // namespace btm

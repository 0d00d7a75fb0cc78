// btm eval: the collective phase alone (eval.h5).

#include "btm/app/cli.hpp"
#include "btm/app/command_context.hpp"
#include "btm/app/commands.hpp"
#include "btm/eval/evaluate.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/util/error.hpp"

namespace btm {

int cmd_eval(const Args& args, MpiComm& world, const Backends& backends) {
  Config config;
  parse_command(
      "eval",
      "The collective phase: per-token log-probabilities of every ELM (and the dense\n"
      "baseline) on every train and held-out domain, ensembles with the cached-prior domain\n"
      "posterior (top-1..K), the uniform mixture, parameter averages; writes RUN/eval.h5.",
      args, po::options_description("Options"), &config, world.rank() == 0);
  RunContext ctx = prepare_context("eval", config, world, backends, 0, {{}, false, true});
  run_eval_phase(ctx);
  return kExitOk;
}

}  // namespace btm

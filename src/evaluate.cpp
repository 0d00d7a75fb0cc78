#include "btm/evaluate.hpp"

#include <iostream>

#include "btm/error.hpp"

namespace btm {

void run_eval_phase(RunContext& ctx) {
  if (ctx.leader()) std::cout << "[eval] not implemented yet" << std::endl;
}

std::vector<double> posterior_branch_weights(RunContext&, const std::vector<std::string>&,
                                             const std::string&, int) {
  throw InputError("posterior branch weights are not implemented yet: pass --weights");
}

}  // namespace btm

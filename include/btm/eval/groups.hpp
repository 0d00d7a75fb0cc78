// groups.hpp: the collective machinery of the evaluation phase: the world cut into groups (an
// ELM each at a time) and the parameter averages formed over the groups' engines.
#pragma once

#include <memory>
#include <span>

#include "btm/dist/comm.hpp"
#include "btm/model/engine.hpp"
#include "btm/pipeline/run_context.hpp"

namespace btm {

// The evaluation's groups: the world cut into groups of run.ranks_per_elm ranks (an ELM each at
// a time), and a communicator of the groups' leaders (rank 0 of every group; the other ranks get
// one of non-leaders). Throws InputError where the world does not divide.
struct EvalGroups {
  int groups = 1;
  int index = 0;
  std::unique_ptr<MpiComm> group;    // my group
  std::unique_ptr<MpiComm> leaders;  // group rank 0 of every group (others: a comm of non-leaders)
  bool leader() const { return group->rank() == 0; }
};
EvalGroups make_eval_groups(RunContext& ctx);

// Sets the engine parameters of every rank of group `root_group` to theta = sum_j weights[j]
// theta_j over the parents the group leaders' engines hold (Engine::hold_parent; ELM j is held by
// group j % G): with one group the sum is formed in that engine (on the device on GPUs); with
// several, each leader's fixed-point sum is added up over the leaders (exact, so the bits do not
// depend on the groups). Collective over the world.
void set_average_params(EvalGroups& g, Engine& engine, std::span<const double> weights,
                        int root_group);

}  // namespace btm

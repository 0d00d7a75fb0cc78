// evaluate.hpp: the collective phase. Every group computes the per-token log-probabilities of
// its ELM(s) on the evaluation blocks of every evaluation domain; those arrays (not weights)
// are gathered and combined into ensemble perplexities; parameter averages are formed where the
// engines run (set_average_params) and evaluated like any LM. Results go to RUN/eval.h5:
//   root attributes: format="btm-eval", format_version, config, elms (names, order j),
//     domains (evaluation domains), in_domain (1.0 train domain, 0.0 held-out), posterior
//   /perplexity       float64 [methods, domains], attribute methods: "elm:NAME",
//                     "ensemble:top-k" (k = 1..K), "ensemble:uniform-mixture",
//                     "ensemble:uniform-prior", "average:uniform", "average:cached-prior",
//                     "average:argmax", "dense"; NaN where not evaluated
//   /mean_in_domain /mean_out_domain  float64 [methods]
//   /priors           float64 [domains, K]  cached prior of each evaluation domain
//   /average_weights  float64 [schemes, domains, K], attribute schemes
//   /tokens           int64 [domains]   test tokens scored per domain
//   /compute          the models compared (seed, ELMs, dense; attribute models, continues =
//                     "seed" where a model's trajectory starts as the seed's): datasets steps,
//                     global_batch (sequences per step of its own phase), tokens, flops (over
//                     the lineage), train_seconds (its own phase, from its metrics); attributes
//                     forest_tokens (seed + every ELM's own), dense_tokens
//   format_version 2 (1: without /compute)
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "btm/dist/comm.hpp"
#include "btm/model/engine.hpp"
#include "btm/pipeline/run_context.hpp"

namespace btm {

void run_eval_phase(RunContext& ctx);

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

// Weights for branching a new ELM for `domain`: the cached prior (domain posterior) of the
// `parents` on the domain's validation split, top-k, renormalised.
std::vector<double> posterior_branch_weights(RunContext& ctx,
                                             const std::vector<std::string>& parents,
                                             const std::string& domain, int topk);

}  // namespace btm

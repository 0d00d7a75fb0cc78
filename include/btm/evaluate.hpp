// evaluate.hpp: the collective phase. Every group computes the per-token log-probabilities of
// its ELM(s) on the evaluation blocks of every evaluation domain; those arrays (not weights)
// are gathered and combined into ensemble perplexities; parameter averages are formed by one
// weighted all-reduce and evaluated like any LM. Results go to RUN/eval.h5:
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
#pragma once

#include <string>
#include <vector>

#include "btm/run_context.hpp"

namespace btm {

void run_eval_phase(RunContext& ctx);

// Weights for branching a new ELM for `domain`: the cached prior (domain posterior) of the
// `parents` on the domain's validation split, top-k, renormalised.
std::vector<double> posterior_branch_weights(RunContext& ctx,
                                             const std::vector<std::string>& parents,
                                             const std::string& domain, int topk);

}  // namespace btm

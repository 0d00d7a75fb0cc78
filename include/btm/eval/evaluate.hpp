// evaluate.hpp: the collective phase. It evaluates the forest in steps, each in its own file:
//   plan.hpp     the evaluation domains, the block sets, the models scored on them; the average
//                weight schemes and the distinct weight vectors to form
//   score.hpp    per-token log-probabilities of the models on their block sets over the groups,
//                and of the parameter averages (formed where the engines run, groups.hpp),
//                gathered on world rank 0: only these arrays travel, never weights
//   combine.hpp  on rank 0: cached priors, ensembles, the averages' perplexities, the means
// and world rank 0 writes the results to RUN/eval.h5 (the layout: io/eval_file.hpp).
#pragma once

#include <string>
#include <vector>

#include "btm/eval/groups.hpp"
#include "btm/pipeline/run_context.hpp"

namespace btm {

void run_eval_phase(RunContext& ctx);

// Weights for branching a new ELM for `domain`: the cached prior (domain posterior) of the
// `parents` on the domain's validation split, top-k, renormalised.
std::vector<double> posterior_branch_weights(RunContext& ctx,
                                             const std::vector<std::string>& parents,
                                             const std::string& domain, int topk);

}  // namespace btm

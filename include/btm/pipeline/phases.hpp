// phases.hpp: the BTM pipeline, one function per phase. Each phase reads what it needs from
// the run directory, can run alone on an existing forest, and skips work already done, so
// rerunning a command after a crash or a preemption continues it.
//   seed   -> the whole world trains one LM on all train domains (domain-balanced batches)
//   branch -> every ELM starts as a copy of the seed (weights, moments, schedule position), or
//             as a weighted average of existing ELMs
//   train  -> G = W / r groups train their ELMs on their own domain, with no traffic between groups
//   merge  -> the manifest records the trained ELMs
//   dense  -> the compute-matched dense baseline on all ranks over all domains: the seed's
//             trajectory continued to run.steps (budget.hpp has the rule)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "btm/method/budget.hpp"
#include "btm/method/rank_layout.hpp"
#include "btm/pipeline/run_context.hpp"

namespace btm {

enum class PhaseResult { Done, Stopped };

// The ELM names of the run: the train domains, or random-0..K-1 for the random-split ablation.
std::vector<std::string> elm_names(const Config& config);

PhaseResult run_seed_phase(RunContext& ctx);
// First-generation ELMs from the seed, for every name in `names` that has no checkpoint yet.
void run_branch_phase(RunContext& ctx, const std::vector<std::string>& names);
// A new ELM for `domain` as sum_j weights[j] * ELM parents[j] (weights sum to 1).
void branch_from_average(RunContext& ctx, const std::string& domain,
                         const std::vector<std::string>& parents,
                         const std::vector<double>& weights);
// Trains the unfinished ELMs among `names`, one group each, in waves. `world_bytes_during_train`
// receives the bytes this rank sent on the world communicator while the groups trained.
PhaseResult run_train_phase(RunContext& ctx, const std::vector<std::string>& names,
                            std::uint64_t* world_bytes_during_train = nullptr);
void run_merge_phase(RunContext& ctx);
PhaseResult run_dense_phase(RunContext& ctx);
// The pseudo-domains of the random-split ablation, written to RUN/corpus/ (once).
void make_random_split(RunContext& ctx);

}  // namespace btm

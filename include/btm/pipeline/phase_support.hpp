// phase_support.hpp: what the phases (pipeline/*_phase.cpp) share: the manifest records of
// models, the seeds of samplers and initialisations, a fresh model, the leader's writes, and
// training one model with the whole world.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "btm/io/checkpoint.hpp"
#include "btm/io/forest.hpp"
#include "btm/method/budget.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/pipeline/run_context.hpp"

namespace btm {

// FNV-1a of a model name: the per-model part of its seeds.
std::uint64_t name_hash(const std::string& name);
// The seed of a model's data order.
std::uint64_t sampler_seed_for(const Config& config, const std::string& name);
// A record's training facts from its checkpoint: status, steps, global batch, tokens, FLOPs.
void set_progress(ModelRecord& r, const CheckpointInfo& c);
ModelRecord record_from(const CheckpointInfo& c, ModelKind kind, std::vector<std::string> parents,
                        std::vector<double> weights);
// Rank 0 runs `write` (which may throw InputError); every rank learns the outcome.
void on_leader(RunContext& ctx, const std::function<void()>& write);
// The run's manifest, or a new one with the run's config.
Forest load_or_new_forest(const RunContext& ctx);
// Trains one model with the whole world as its group.
PhaseResult train_on_world(RunContext& ctx, const std::string& name);
// Waits, on every rank of `group`, until the last checkpoint written (that of `name`) is on disk,
// and says how long that took.
void wait_for_last_checkpoint(RunContext& ctx, MpiComm& group, const std::string& name);
// The manifest's record of `name` brought up to date with its checkpoint (rank 0).
void update_record(RunContext& ctx, const std::string& name);
// The checkpoint run.seed_checkpoint names, for the model shape of the run. A weights-only one
// (btm export --weights-only) starts with zero AdamW moments, as an imported model does.
Checkpoint load_seed_checkpoint(const RunContext& ctx);
// A model at its initialisation: init_gpt2 with `init_seed`, zero moments, at step 0.
Checkpoint fresh_model(const RunContext& ctx, const std::string& name, std::uint64_t init_seed);
// run.elm_schedule = fresh: the ELM `c` starts its own schedule of `steps` updates at step 0
// (a new warmup and decay) with zero AdamW moments, as c-BTM trains from a pretrained model.
void restart_schedule(Checkpoint& c, std::int64_t steps);
// The run's budget (K = the train domains).
Budget budget_of(const RunContext& ctx);

}  // namespace btm

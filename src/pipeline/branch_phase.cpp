// branch_phase.cpp: branching: first-generation ELMs from the seed (or their own initialisations),
// a new domain from a weighted average.
#include <iostream>
#include <optional>

#include "btm/io/checkpoint.hpp"
#include "btm/io/forest.hpp"
#include "btm/method/average.hpp"
#include "btm/pipeline/phase_support.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/util/error.hpp"
#include "btm/util/rng.hpp"

namespace btm {

namespace fs = std::filesystem;

void run_branch_phase(RunContext& ctx, const std::vector<std::string>& names) {
  const Config& config = ctx.config;
  const Budget budget = budget_of(ctx);
  on_leader(ctx, [&] {
    Forest forest = load_or_new_forest(ctx);
    bool changed = false;
    const fs::path seed_file = checkpoint_file(ctx.run_dir, "seed");
    std::optional<CheckpointInfo> seed;
    std::optional<Checkpoint> seed_weights;  // with run.elm_schedule fresh
    for (const std::string& name : names) {
      const fs::path file = checkpoint_file(ctx.run_dir, name);
      if (fs::exists(file)) {
        if (!forest.find(name)) {  // a checkpoint the manifest lost track of
          forest.upsert(record_from(peek_checkpoint(file), ModelKind::elm, {"seed"}, {1.0}));
          changed = true;
        }
        continue;
      }
      const bool own_init = config.run.elm_init == ElmInit::random;
      const bool fresh_schedule = config.run.elm_schedule == ElmSchedule::fresh;
      Checkpoint full;  // the state written here (not a reference to the seed's)
      if (own_init) {
        // The paper's check that averaging needs a shared seed: an initialisation of its own.
        full = fresh_model(ctx, name, mix64(config.run.seed ^ name_hash(name)));
        full.schedule_steps = budget.total_steps;
      } else if (!seed) {
        if (!fs::exists(seed_file))
          throw InputError(seed_file.string() + " not found: train the seed first (btm seed)");
        seed = peek_checkpoint(seed_file);
        if (!seed->finished())
          throw InputError(
              seed_file.string() + ": the seed is at step " + std::to_string(seed->step) + " of " +
              std::to_string(seed->target_steps) + ": finish it first (btm seed continues it)");
      }
      // A branch of the seed continues its weights, moments and schedule position; with
      // run.elm_schedule fresh (c-BTM) its weights only, with a schedule of its own.
      if (!own_init && fresh_schedule) {
        // The seed's weights, read once for every branch.
        if (!seed_weights) seed_weights = load_checkpoint(seed_file, &config.model, false);
        full = *seed_weights;
      }
      CheckpointInfo elm = own_init || fresh_schedule ? full : *seed;
      elm.target_steps = elm.schedule_steps;
      elm.name = name;
      elm.domains = {name};
      elm.batch = budget.elm_batch;  // 1/K of the seed's: the paper's compute matching
      elm.sampler_seed = sampler_seed_for(config, name);
      elm.sampler_position = 0;
      elm.config_ini = ctx.config_ini;
      if (own_init || fresh_schedule) {
        static_cast<CheckpointInfo&>(full) = elm;
        if (fresh_schedule) restart_schedule(full, budget.elm_steps);
        save_checkpoint(file, full);
        elm = full;
      } else {
        // No copy of the seed: the branch refers to its state until its first checkpoint.
        elm = save_checkpoint_reference(file, elm, seed_file);
      }
      forest.upsert(
          record_from(elm, ModelKind::elm,
                      own_init ? std::vector<std::string>{} : std::vector<std::string>{"seed"},
                      own_init ? std::vector<double>{} : std::vector<double>{1.0}));
      changed = true;
      std::cout << "[branch] " << name
                << (own_init ? " <- its own initialisation"
                             : " <- seed (step " + std::to_string(seed->step) + ")")
                << (fresh_schedule
                        ? ", a fresh schedule of " + std::to_string(elm.target_steps) + " steps"
                        : "")
                << (elm.state_from.empty() ? "" : "; its state until the first checkpoint, no copy")
                << std::endl;
    }
    if (changed) save_forest(ctx.run_dir, forest);
  });
}

void branch_from_average(RunContext& ctx, const std::string& domain,
                         const std::vector<std::string>& parents,
                         const std::vector<double>& weights) {
  const Config& config = ctx.config;
  const Budget budget = budget_of(ctx);
  on_leader(ctx, [&] {
    const fs::path file = checkpoint_file(ctx.run_dir, domain);
    if (fs::exists(file))
      throw InputError(file.string() + " exists: ELM '" + domain +
                       "' is already in the forest (btm forest remove it first)");
    Forest forest = load_or_new_forest(ctx);
    std::vector<fs::path> files;
    for (const std::string& p : parents) files.push_back(checkpoint_file(ctx.run_dir, p));
    const bool fresh = config.run.elm_schedule == ElmSchedule::fresh;  // no moments needed
    Checkpoint out = average_checkpoints(files, weights, config.model, !fresh);
    // The new ELM gets a first-generation ELM's budget: it re-enters the schedule where
    // branching from the seed would have left it, with an ELM's global batch.
    out.name = domain;
    out.domains = {domain};
    out.step = budget.seed_steps;
    out.target_steps = budget.total_steps;
    out.schedule_steps = budget.total_steps;
    if (fresh) restart_schedule(out, budget.elm_steps);
    out.batch = budget.elm_batch;
    out.sampler_seed = sampler_seed_for(config, domain);
    out.sampler_position = 0;
    out.config_ini = ctx.config_ini;
    save_checkpoint(file, out);
    forest.upsert(record_from(out, ModelKind::elm, parents, weights));
    save_forest(ctx.run_dir, forest);
    std::cout << "[branch] " << domain << " <- average of";
    for (std::size_t j = 0; j < parents.size(); ++j)
      std::cout << " " << parents[j] << " (" << weights[j] << ")";
    std::cout << std::endl;
  });
}

}  // namespace btm

// dense_phase.cpp: the compute-matched dense baseline: the seed's trajectory run to run.steps.
#include <iostream>

#include "btm/io/checkpoint.hpp"
#include "btm/io/forest.hpp"
#include "btm/pipeline/phase_support.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/util/format.hpp"

namespace btm {

namespace fs = std::filesystem;

PhaseResult run_dense_phase(RunContext& ctx) {
  const Config& config = ctx.config;
  const Budget budget = budget_of(ctx);
  const fs::path file = checkpoint_file(ctx.run_dir, "dense");
  if (decided_by_root(ctx.world,
                      [&] { return fs::exists(file) && peek_checkpoint(file).finished(); })) {
    if (ctx.leader()) std::cout << "[dense] already trained: skipped" << std::endl;
    update_record(ctx, "dense");
    return PhaseResult::Done;
  }
  if (!decided_by_root(ctx.world, [&] { return fs::exists(file); })) {
    on_leader(ctx, [&] {
      Forest forest = load_or_new_forest(ctx);
      // The dense baseline is the seed's trajectory run to run.steps: the same initialisation,
      // data order, global batch and schedule. Where the forest trained its seed, the dense
      // model continues it instead of repeating that compute; the bits are the same.
      const fs::path seed_file = checkpoint_file(ctx.run_dir, "seed");
      bool continues = false;
      CheckpointInfo seed;
      if (budget.seed_steps > 0 && config.run.seed_checkpoint.empty() && fs::exists(seed_file)) {
        seed = peek_checkpoint(seed_file);
        const CheckpointInfo& s = seed;
        continues = s.finished() && s.step == budget.seed_steps && s.batch == budget.world_batch &&
                    s.schedule_steps == budget.total_steps && s.state_from.empty();
      }
      // A pretrained seed with fresh ELM schedules (c-BTM): the dense baseline starts from the
      // same pretrained weights with a fresh schedule over run.steps, not from scratch.
      const bool pretrained =
          !config.run.seed_checkpoint.empty() && config.run.elm_schedule == ElmSchedule::fresh;
      Checkpoint full;  // the state written here (not a reference to the seed's)
      if (pretrained) {
        full = load_seed_checkpoint(ctx);
        restart_schedule(full, budget.total_steps);
        full.sampler_seed = sampler_seed_for(config, "seed");  // the seed's data order
        full.sampler_position = 0;
      } else if (!continues) {
        full = fresh_model(ctx, "seed", config.run.seed);
      }
      CheckpointInfo c = continues ? seed : full;
      c.name = "dense";
      c.domains = config.data.domains;
      c.target_steps = budget.total_steps;
      c.schedule_steps = budget.total_steps;
      c.batch = budget.world_batch;
      c.config_ini = ctx.config_ini;
      if (continues) {
        c = save_checkpoint_reference(file, c, seed_file);  // the seed's state, no copy
      } else {
        static_cast<CheckpointInfo&>(full) = c;
        save_checkpoint(file, full);
      }
      forest.upsert(record_from(
          c, ModelKind::dense,
          continues || pretrained ? std::vector<std::string>{"seed"} : std::vector<std::string>{},
          continues || pretrained ? std::vector<double>{1.0} : std::vector<double>{}));
      save_forest(ctx.run_dir, forest);
      std::cout << "[dense] baseline: " << budget.total_steps << " steps on "
                << counted(ctx.world.size(), "rank")
                << " at the seed's global batch (the forest's tokens)"
                << (pretrained   ? ", from run.seed_checkpoint with a fresh schedule"
                    : c.step > 0 ? ", continuing the seed at step " + std::to_string(c.step)
                                 : ", from the initialisation")
                << std::endl;
    });
  }
  const PhaseResult result = train_on_world(ctx, "dense");
  update_record(ctx, "dense");
  return result;
}

}  // namespace btm

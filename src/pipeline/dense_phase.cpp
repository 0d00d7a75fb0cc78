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
      if (budget.seed_steps > 0 && config.run.seed_checkpoint.empty() && fs::exists(seed_file)) {
        const CheckpointInfo s = peek_checkpoint(seed_file);
        continues = s.finished() && s.step == budget.seed_steps && s.batch == budget.world_batch &&
                    s.schedule_steps == budget.total_steps && s.state_from.empty();
      }
      Checkpoint fresh;
      if (!continues) fresh = fresh_model(ctx, "seed", config.run.seed);
      CheckpointInfo c = continues ? peek_checkpoint(seed_file) : fresh;
      c.name = "dense";
      c.domains = config.data.domains;
      c.target_steps = budget.total_steps;
      c.schedule_steps = budget.total_steps;
      c.batch = budget.world_batch;
      c.config_ini = ctx.config_ini;
      if (continues) {
        save_checkpoint_reference(file, c, seed_file);  // the seed's state, no copy
        c = peek_checkpoint(file);
      } else {
        static_cast<CheckpointInfo&>(fresh) = c;
        save_checkpoint(file, fresh);
      }
      forest.upsert(
          record_from(c, ModelKind::dense,
                      continues ? std::vector<std::string>{"seed"} : std::vector<std::string>{},
                      continues ? std::vector<double>{1.0} : std::vector<double>{}));
      save_forest(ctx.run_dir, forest);
      std::cout << "[dense] baseline: " << budget.total_steps << " steps on "
                << counted(ctx.world.size(), "rank")
                << " at the seed's global batch (the forest's tokens)"
                << (c.step > 0 ? ", continuing the seed at step " + std::to_string(c.step)
                               : ", from the initialisation")
                << std::endl;
    });
  }
  const PhaseResult result = train_on_world(ctx, "dense");
  update_record(ctx, "dense");
  return result;
}

}  // namespace btm

// train_phase.cpp: the ELM phase: groups train their ELMs in waves, then the manifest records them
// (merge).
#include <iostream>

#include "btm/io/checkpoint.hpp"
#include "btm/io/forest.hpp"
#include "btm/model/engine.hpp"
#include "btm/pipeline/phase_support.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/pipeline/trainer.hpp"
#include "btm/util/error.hpp"
#include "btm/util/format.hpp"

namespace btm {

namespace fs = std::filesystem;

PhaseResult run_train_phase(RunContext& ctx, const std::vector<std::string>& names,
                            std::uint64_t* world_bytes_during_train) {
  const int r = ctx.config.run.ranks_per_elm;
  const std::vector<std::string> pending = listed_by_root(ctx.world, [&] {
    std::vector<std::string> unfinished;
    for (const std::string& name : names) {
      const fs::path file = checkpoint_file(ctx.run_dir, name);
      if (!fs::exists(file))
        throw InputError("ELM '" + name + "' has no checkpoint (" + file.string() +
                         "): branch it first (btm branch)");
      const CheckpointInfo c = peek_checkpoint(file);
      check_trainable(c, file, r, ctx.config.data.batch);  // before any ELM trains
      if (!c.finished()) unfinished.push_back(name);
    }
    return unfinished;
  });
  if (pending.empty()) {
    if (ctx.leader())
      std::cout << "[train] all " << counted(static_cast<std::int64_t>(names.size()), "ELM")
                << " trained: skipped" << std::endl;
    return PhaseResult::Done;
  }
  const RankLayout layout = plan_layout(ctx.world.size(), r, pending);
  if (ctx.leader()) {
    const Budget budget = budget_of(ctx);
    std::cout << "[train] " << pending.size() << " of "
              << counted(static_cast<std::int64_t>(names.size()), "ELM") << " to train\n"
              << describe_layout(layout, budget.elm_steps, budget.tokens_per_step(budget.elm_batch))
              << std::flush;
  }
  const int group_index = layout.group_of(ctx.world.rank());
  std::unique_ptr<MpiComm> group = ctx.world.split(group_index, ctx.world.rank());
  Engine& engine = training_engine(ctx);
  std::unique_ptr<Communicator> storage;
  Communicator* grads = gradient_comm(ctx, *group, storage);

  // From here until the groups are done, no byte may cross groups (the world is not used).
  const std::uint64_t world_bytes_before = ctx.world.bytes_sent();
  TrainResult result = TrainResult::Finished;
  // An ELM's last checkpoint is written while the group's next ELM trains.
  const std::vector<std::string> mine = layout.elms_of_group(group_index);
  for (std::size_t i = 0; i < mine.size(); ++i) {
    result = train_model(ctx, *group, engine, grads, mine[i],
                         {mine.begin() + static_cast<std::ptrdiff_t>(i) + 1, mine.end()});
    if (result == TrainResult::Stopped) break;
  }
  if (mine.empty())
    collective_check(*group, [&] { ctx.writer->wait(); });
  else
    wait_for_last_checkpoint(ctx, *group, mine.back());
  if (world_bytes_during_train)
    *world_bytes_during_train = ctx.world.bytes_sent() - world_bytes_before;

  const int stopped = ctx.world.allreduce_max(result == TrainResult::Stopped ? 1 : 0);
  run_merge_phase(ctx);
  return stopped ? PhaseResult::Stopped : PhaseResult::Done;
}

void run_merge_phase(RunContext& ctx) {
  on_leader(ctx, [&] {
    Forest forest = load_or_new_forest(ctx);
    int trained = 0;
    for (ModelRecord& r : forest.models) {
      const fs::path file = ctx.run_dir / r.checkpoint;
      if (!fs::exists(file)) continue;
      const CheckpointInfo c = peek_checkpoint(file);
      set_progress(r, c);
      if (r.kind == ModelKind::elm && c.finished()) ++trained;
    }
    save_forest(ctx.run_dir, forest);
    std::cout << "[merge] forest: " << trained << " of "
              << counted(static_cast<std::int64_t>(forest.elms().size()), "ELM") << " trained"
              << std::endl;
  });
}

}  // namespace btm

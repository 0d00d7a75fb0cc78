#include "btm/pipeline/phase_support.hpp"

#include <cstdio>

#include "btm/io/checkpoint.hpp"
#include "btm/io/forest.hpp"
#include "btm/model/engine.hpp"
#include "btm/model/params.hpp"
#include "btm/pipeline/trainer.hpp"
#include "btm/util/clock.hpp"
#include "btm/util/error.hpp"
#include "btm/util/rng.hpp"

namespace btm {

namespace fs = std::filesystem;

std::uint64_t name_hash(const std::string& name) {
  std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

std::uint64_t sampler_seed_for(const Config& config, const std::string& name) {
  return mix64(config.run.seed ^ name_hash(name));
}

void set_progress(ModelRecord& r, const CheckpointInfo& c) {
  r.status = c.finished() ? ModelStatus::trained : ModelStatus::branched;
  r.steps = c.step;
  r.global_batch = c.batch.sequences();
  r.tokens = static_cast<std::int64_t>(c.tokens);
  r.flops = static_cast<double>(c.tokens) * train_flops_per_token(ParamLayout(c.model));
  r.state_from = c.state_from;
}

ModelRecord record_from(const CheckpointInfo& c, ModelKind kind, std::vector<std::string> parents,
                        std::vector<double> weights) {
  ModelRecord r;
  r.name = c.name;
  r.kind = kind;
  r.domains = c.domains;
  r.parents = std::move(parents);
  r.parent_weights = std::move(weights);
  set_progress(r, c);
  r.checkpoint = fs::path("elms") / (c.name + ".h5");
  return r;
}

void on_leader(RunContext& ctx, const std::function<void()>& write) {
  collective_check(ctx.world, [&] {
    if (ctx.leader()) write();
  });
}

Forest load_or_new_forest(const RunContext& ctx) {
  Forest forest = load_forest(ctx.run_dir);
  if (forest.config_ini.empty()) {
    forest.config_ini = ctx.config_ini;
    forest.clusters = ctx.config.data.clusters;
  }
  return forest;
}

PhaseResult train_on_world(RunContext& ctx, const std::string& name) {
  Engine& engine = training_engine(ctx);
  std::unique_ptr<Communicator> storage;
  Communicator* grads = gradient_comm(ctx, ctx.world, storage);
  const TrainResult result = train_model(ctx, ctx.world, engine, grads, name);
  wait_for_last_checkpoint(ctx, ctx.world, name);
  const int stopped = ctx.world.allreduce_max(result == TrainResult::Stopped ? 1 : 0);
  return stopped ? PhaseResult::Stopped : PhaseResult::Done;
}

void wait_for_last_checkpoint(RunContext& ctx, MpiComm& group, const std::string& name) {
  const auto waiting = Clock::now();
  collective_check(group, [&] { ctx.writer->wait(); });
  if (group.rank() == 0)
    std::printf("[%s] waited %.1f s for its last checkpoint to be written\n", name.c_str(),
                seconds_since(waiting));
}

void update_record(RunContext& ctx, const std::string& name) {
  on_leader(ctx, [&] {
    Forest forest = load_or_new_forest(ctx);
    ModelRecord* r = forest.find(name);
    if (!r) return;
    set_progress(*r, peek_checkpoint(checkpoint_file(ctx.run_dir, name)));
    save_forest(ctx.run_dir, forest);
  });
}

Checkpoint load_seed_checkpoint(const RunContext& ctx) {
  const std::string& file = ctx.config.run.seed_checkpoint;
  const bool weights_only = peek_checkpoint(file).weights_only;
  Checkpoint c = load_checkpoint(file, &ctx.config.model, !weights_only);
  if (weights_only) {
    c.adam_m.assign(c.params.size(), 0.0f);
    c.adam_v.assign(c.params.size(), 0.0f);
    c.weights_only = false;
  }
  return c;
}

Checkpoint fresh_model(const RunContext& ctx, const std::string& name, std::uint64_t init_seed) {
  Checkpoint c;
  c.name = name;
  c.model = ctx.config.model;
  const ParamLayout layout(c.model);
  c.params.assign(layout.total(), 0.0f);
  init_gpt2(layout, c.params, init_seed);
  c.adam_m.assign(layout.total(), 0.0f);
  c.adam_v.assign(layout.total(), 0.0f);
  c.config_ini = ctx.config_ini;
  c.sampler_seed = sampler_seed_for(ctx.config, name);
  return c;
}

void restart_schedule(Checkpoint& c, std::int64_t steps) {
  c.step = 0;
  c.target_steps = steps;
  c.schedule_steps = steps;
  // Moments built under the seed's schedule, with its bias correction at step t, do not fit
  // a restart at t = 1.
  c.adam_m.assign(c.params.size(), 0.0f);
  c.adam_v.assign(c.params.size(), 0.0f);
}

Budget budget_of(const RunContext& ctx) {
  return make_budget(ctx.config, static_cast<int>(ctx.config.data.domains.size()));
}

}  // namespace btm

#include "btm/pipeline/phases.hpp"

#include <cmath>
#include <iostream>
#include <optional>

#include "btm/data/corpus.hpp"
#include "btm/data/sampler.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/forest.hpp"
#include "btm/method/average.hpp"
#include "btm/model/engine.hpp"
#include "btm/model/params.hpp"
#include "btm/pipeline/trainer.hpp"
#include "btm/util/error.hpp"
#include "btm/util/format.hpp"
#include "btm/util/rng.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

std::uint64_t name_hash(const std::string& name) {
  std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

std::uint64_t sampler_seed_for(const Config& config, const std::string& name) {
  return mix64(config.run.seed ^ name_hash(name));
}

// The record's training facts from its checkpoint: status, steps, global batch, tokens, FLOPs.
void set_progress(ModelRecord& r, const CheckpointInfo& c) {
  r.status = c.finished() ? "trained" : "branched";
  r.steps = c.step;
  r.global_batch = c.batch.sequences();
  r.tokens = static_cast<std::int64_t>(c.tokens);
  r.flops = static_cast<double>(c.tokens) * train_flops_per_token(ParamLayout(c.model));
}

ModelRecord record_from(const CheckpointInfo& c, const std::string& kind,
                        std::vector<std::string> parents, std::vector<double> weights) {
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

// Rank 0 runs `write` (which may throw InputError); every rank learns the outcome.
void on_leader(RunContext& ctx, const std::function<void()>& write) {
  collective_check(ctx.world, [&] {
    if (ctx.leader()) write();
  });
}

Forest load_or_new_forest(const RunContext& ctx) {
  Forest forest = load_forest(ctx.run_dir);
  if (forest.config_ini.empty()) forest.config_ini = ctx.config_ini;
  return forest;
}

// Trains one model with the whole world as its group.
PhaseResult train_on_world(RunContext& ctx, const std::string& name) {
  std::unique_ptr<Engine> engine = make_engine_for(ctx);
  std::unique_ptr<Communicator> storage;
  Communicator* grads = gradient_comm(ctx, ctx.world, storage);
  const TrainResult result = train_model(ctx, ctx.world, *engine, grads, name);
  const int stopped = ctx.world.allreduce_max(result == TrainResult::Stopped ? 1 : 0);
  return stopped ? PhaseResult::Stopped : PhaseResult::Done;
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

// A model at its initialisation: init_gpt2 with `init_seed`, zero moments, at step 0.
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

Budget budget_of(const RunContext& ctx) {
  return make_budget(ctx.config, static_cast<int>(ctx.config.data.domains.size()));
}

}  // namespace

std::vector<std::string> elm_names(const Config& config) {
  if (config.run.split == SplitMode::domain) return config.data.domains;
  std::vector<std::string> names;
  for (std::size_t k = 0; k < config.data.domains.size(); ++k)
    names.push_back("random-" + std::to_string(k));
  return names;
}

PhaseResult run_seed_phase(RunContext& ctx) {
  const Config& config = ctx.config;
  const Budget budget = budget_of(ctx);
  const fs::path file = checkpoint_file(ctx.run_dir, "seed");
  Forest forest;
  const bool trained = decided_by_root(ctx.world, [&] {
    forest = load_or_new_forest(ctx);
    const ModelRecord* r = forest.find("seed");
    if (!(r && r->status == "trained" && fs::exists(file))) return false;
    std::cout << "[seed] already trained (" << r->steps << " steps): skipped" << std::endl;
    return true;
  });
  if (trained) return PhaseResult::Done;
  if (!decided_by_root(ctx.world, [&] { return fs::exists(file); })) {
    on_leader(ctx, [&] {
      Checkpoint c;
      if (!config.run.seed_checkpoint.empty()) {
        c = load_checkpoint(config.run.seed_checkpoint, &config.model);
        if (c.step >= budget.total_steps)
          throw InputError(config.run.seed_checkpoint + ": it is at step " +
                           std::to_string(c.step) +
                           ", not before run.steps = " + std::to_string(budget.total_steps) +
                           ": raise run.steps so the ELMs have steps left to train");
        c.name = "seed";
        c.target_steps = c.step;
        c.schedule_steps = budget.total_steps;
        c.config_ini = ctx.config_ini;
        c.domains = config.data.domains;
      } else {
        c = fresh_model(ctx, "seed", config.run.seed);
        c.target_steps = budget.seed_steps;
        c.schedule_steps = budget.total_steps;
        c.domains = config.data.domains;
      }
      c.batch = budget.world_batch;
      save_checkpoint(file, c);
      forest.upsert(record_from(c, "seed", {}, {}));
      save_forest(ctx.run_dir, forest);
    });
  }
  if (ctx.leader())
    std::cout << "[seed] phase: " << budget.seed_steps << " of " << budget.total_steps
              << " steps on " << counted(ctx.world.size(), "rank") << ", domain-balanced over "
              << counted(static_cast<std::int64_t>(config.data.domains.size()), "domain")
              << std::endl;
  const PhaseResult result = train_on_world(ctx, "seed");
  update_record(ctx, "seed");
  return result;
}

void run_branch_phase(RunContext& ctx, const std::vector<std::string>& names) {
  const Config& config = ctx.config;
  const Budget budget = budget_of(ctx);
  on_leader(ctx, [&] {
    Forest forest = load_or_new_forest(ctx);
    bool changed = false;
    std::unique_ptr<Checkpoint> seed;
    for (const std::string& name : names) {
      const fs::path file = checkpoint_file(ctx.run_dir, name);
      if (fs::exists(file)) {
        if (!forest.find(name)) {  // a checkpoint the manifest lost track of
          forest.upsert(record_from(peek_checkpoint(file), "elm", {"seed"}, {1.0}));
          changed = true;
        }
        continue;
      }
      Checkpoint elm;
      if (config.run.elm_init == ElmInit::random) {
        // The paper's check that averaging needs a shared seed: an initialisation of its own.
        elm = fresh_model(ctx, name, mix64(config.run.seed ^ name_hash(name)));
        elm.schedule_steps = budget.total_steps;
      } else {
        if (!seed) {
          const fs::path seed_file = checkpoint_file(ctx.run_dir, "seed");
          if (!fs::exists(seed_file))
            throw InputError(seed_file.string() + " not found: train the seed first (btm seed)");
          seed = std::make_unique<Checkpoint>(load_checkpoint(seed_file, &config.model));
          if (!seed->finished())
            throw InputError(seed_file.string() + ": the seed is at step " +
                             std::to_string(seed->step) + " of " +
                             std::to_string(seed->target_steps) +
                             ": finish it first (btm seed continues it)");
        }
        elm = *seed;  // weights, moments and schedule position continue
      }
      elm.name = name;
      elm.domains = {name};
      elm.target_steps = elm.schedule_steps;
      elm.batch = budget.elm_batch;  // 1/K of the seed's: the paper's compute matching
      elm.sampler_seed = sampler_seed_for(config, name);
      elm.sampler_position = 0;
      elm.config_ini = ctx.config_ini;
      save_checkpoint(file, elm);
      const bool own_init = config.run.elm_init == ElmInit::random;
      forest.upsert(record_from(
          elm, "elm", own_init ? std::vector<std::string>{} : std::vector<std::string>{"seed"},
          own_init ? std::vector<double>{} : std::vector<double>{1.0}));
      changed = true;
      std::cout << "[branch] " << name
                << (own_init ? " <- its own initialisation"
                             : " <- seed (step " + std::to_string(elm.step) + ")")
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
    Checkpoint out = average_checkpoints(files, weights, config.model, true);
    // The new ELM gets a first-generation ELM's budget: it re-enters the schedule where
    // branching from the seed would have left it, with an ELM's global batch.
    out.name = domain;
    out.domains = {domain};
    out.step = budget.seed_steps;
    out.target_steps = budget.total_steps;
    out.schedule_steps = budget.total_steps;
    out.batch = budget.elm_batch;
    out.sampler_seed = sampler_seed_for(config, domain);
    out.sampler_position = 0;
    out.config_ini = ctx.config_ini;
    save_checkpoint(file, out);
    forest.upsert(record_from(out, "elm", parents, weights));
    save_forest(ctx.run_dir, forest);
    std::cout << "[branch] " << domain << " <- average of";
    for (std::size_t j = 0; j < parents.size(); ++j)
      std::cout << " " << parents[j] << " (" << weights[j] << ")";
    std::cout << std::endl;
  });
}

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
      std::cout << "[train] all " << names.size() << " ELMs are trained: skipped" << std::endl;
    return PhaseResult::Done;
  }
  const RankLayout layout = plan_layout(ctx.world.size(), r, pending);
  if (ctx.leader()) {
    const Budget budget = budget_of(ctx);
    std::cout << "[train] " << pending.size() << " of " << names.size() << " ELMs to train\n"
              << describe_layout(layout, budget.elm_steps, budget.tokens_per_step(budget.elm_batch))
              << std::flush;
  }
  const int group_index = layout.group_of(ctx.world.rank());
  std::unique_ptr<MpiComm> group = ctx.world.split(group_index, ctx.world.rank());
  std::unique_ptr<Engine> engine = make_engine_for(ctx);
  std::unique_ptr<Communicator> storage;
  Communicator* grads = gradient_comm(ctx, *group, storage);

  // From here until the groups are done, no byte may cross groups (the world is not used).
  const std::uint64_t world_bytes_before = ctx.world.bytes_sent();
  TrainResult result = TrainResult::Finished;
  for (const std::string& name : layout.elms_of_group(group_index)) {
    result = train_model(ctx, *group, *engine, grads, name);
    if (result == TrainResult::Stopped) break;
  }
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
      if (r.kind == "elm" && c.finished()) ++trained;
    }
    save_forest(ctx.run_dir, forest);
    std::cout << "[merge] forest: " << trained << " of " << forest.elms().size() << " ELMs trained"
              << std::endl;
  });
}

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
      std::optional<Checkpoint> seed;
      if (budget.seed_steps > 0 && config.run.seed_checkpoint.empty() && fs::exists(seed_file)) {
        const CheckpointInfo s = peek_checkpoint(seed_file);
        if (s.finished() && s.step == budget.seed_steps && s.batch == budget.world_batch &&
            s.schedule_steps == budget.total_steps)
          seed = load_checkpoint(seed_file, &config.model);
      }
      const bool continues = seed.has_value();
      Checkpoint c = continues ? std::move(*seed) : fresh_model(ctx, "seed", config.run.seed);
      c.name = "dense";
      c.domains = config.data.domains;
      c.target_steps = budget.total_steps;
      c.schedule_steps = budget.total_steps;
      c.batch = budget.world_batch;
      c.config_ini = ctx.config_ini;
      save_checkpoint(file, c);
      forest.upsert(record_from(
          c, "dense", continues ? std::vector<std::string>{"seed"} : std::vector<std::string>{},
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

void make_random_split(RunContext& ctx) {
  const Config& config = ctx.config;
  const std::size_t K = config.data.domains.size();
  on_leader(ctx, [&] {
    const fs::path dir = ctx.run_dir / "corpus";
    bool complete = true;
    for (std::size_t k = 0; k < K; ++k)
      complete = complete && fs::exists(dir / ("random-" + std::to_string(k) + ".h5"));
    if (complete) return;
    std::vector<DomainCorpus> corpora;
    for (const std::string& d : config.data.domains)
      corpora.push_back(
          load_corpus(fs::path(config.data.corpus) / (d + ".h5"), config.model.vocab_size));
    std::vector<std::vector<std::uint16_t>> out(K * 3);
    std::vector<std::int64_t> docs(K * 3, 0);
    for (int s = 0; s < 3; ++s) {
      // All documents of all train domains, shuffled, dealt round robin into K equal parts.
      std::vector<std::pair<const TokenArray*, std::pair<std::size_t, std::size_t>>> all;
      for (const DomainCorpus& c : corpora)
        for (auto span : document_spans(c.splits[s], c.info.eot_token))
          all.push_back({&c.splits[s], span});
      if (all.empty()) continue;
      const Permutation order(
          all.size(), mix64(config.run.seed ^ 0x5EED5EEDull ^ static_cast<std::uint64_t>(s)));
      for (std::size_t i = 0; i < all.size(); ++i) {
        const auto& [tokens, span] = all[order(i)];
        std::vector<std::uint16_t>& dst = out[(i % K) * 3 + static_cast<std::size_t>(s)];
        dst.insert(dst.end(), tokens->data() + span.first, tokens->data() + span.second);
        ++docs[(i % K) * 3 + static_cast<std::size_t>(s)];
      }
    }
    for (std::size_t k = 0; k < K; ++k) {
      CorpusInfo info = corpora[0].info;
      info.domain = "random-" + std::to_string(k);
      info.source = "random split " + std::to_string(k) + " of " + std::to_string(K) +
                    " over the documents of the train domains";
      std::vector<std::uint16_t> splits[3];
      for (int s = 0; s < 3; ++s) {
        splits[s] = std::move(out[k * 3 + static_cast<std::size_t>(s)]);
        info.docs[s] = docs[k * 3 + static_cast<std::size_t>(s)];
        info.bytes[s] = 0;
      }
      write_corpus(dir / (info.domain + ".h5"), info, splits);
    }
    std::cout << "[split] " << K << " random pseudo-domains written to " << dir.string()
              << std::endl;
  });
}

}  // namespace btm

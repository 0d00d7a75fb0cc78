// seed_phase.cpp: the seed phase: the whole world trains one LM on all train domains.
#include <iostream>

#include "btm/data/corpus.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/forest.hpp"
#include "btm/pipeline/phase_support.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/util/error.hpp"
#include "btm/util/format.hpp"

namespace btm {

namespace fs = std::filesystem;

std::vector<std::string> elm_names(const Config& config) {
  if (config.run.split == SplitMode::domain) return config.data.domains;
  std::vector<std::string> names;
  for (std::size_t k = 0; k < config.data.domains.size(); ++k)
    names.push_back("random-" + std::to_string(k));
  return names;
}

namespace {

// A given seed (a pretrained model above all) reads ids of its own tokenizer: every corpus must
// have exactly its vocabulary, not merely fit in it (a byte corpus fits in GPT-2's 50,257 ids
// and would train it on meaningless ids).
void check_seed_vocabulary(const RunContext& ctx) {
  const Config& config = ctx.config;
  const int vocab = peek_checkpoint(config.run.seed_checkpoint).model.vocab_size;
  std::vector<std::string> all = config.data.domains;
  all.insert(all.end(), config.data.eval_domains.begin(), config.data.eval_domains.end());
  for (const std::string& d : all) {
    const fs::path file = domain_corpus(ctx, d);
    const CorpusInfo info = read_corpus_info(file);
    if (info.vocab_size != vocab)
      throw InputError(file.string() + ": tokenized with " + info.tokenizer + " (" +
                       std::to_string(info.vocab_size) + " ids), but run.seed_checkpoint " +
                       config.run.seed_checkpoint + " has a vocabulary of " +
                       std::to_string(vocab) +
                       " ids: prepare the corpus with the seed's tokenizer (--tokenizer gpt2 "
                       "for a GPT-2), or give a seed of the corpus's vocabulary");
  }
}

}  // namespace

PhaseResult run_seed_phase(RunContext& ctx) {
  const Config& config = ctx.config;
  const Budget budget = budget_of(ctx);
  const fs::path file = checkpoint_file(ctx.run_dir, "seed");
  Forest forest;
  const bool trained = decided_by_root(ctx.world, [&] {
    forest = load_or_new_forest(ctx);
    const ModelRecord* r = forest.find("seed");
    if (!(r && r->status == ModelStatus::trained && fs::exists(file))) return false;
    std::cout << "[seed] already trained (" << r->steps << " steps): skipped" << std::endl;
    return true;
  });
  if (trained) return PhaseResult::Done;
  if (!decided_by_root(ctx.world, [&] { return fs::exists(file); })) {
    Checkpoint c;
    on_leader(ctx, [&] {
      if (!config.run.seed_checkpoint.empty()) {
        check_seed_vocabulary(ctx);
        c = load_seed_checkpoint(ctx);
        // A fresh ELM schedule does not continue the checkpoint's step count.
        if (config.run.elm_schedule == ElmSchedule::continued && c.step >= budget.total_steps)
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
      forest.upsert(record_from(c, ModelKind::seed, {}, {}));
      save_forest(ctx.run_dir, forest);
    });
    // The engine starts from this state in memory, and its file (atomic: a stop before it is
    // written leaves none, and a resume starts the seed again) is written while the seed trains.
    broadcast_checkpoint(ctx.world, c);
    training_engine(ctx).set_state(c.params, c.adam_m, c.adam_v);
    ctx.engine_state_of = file;
    ctx.engine_state_info = c;
    on_leader(ctx, [&] { ctx.writer->write(file, std::move(c)); });
  }
  if (ctx.leader())
    std::cout << "[seed] phase: " << budget.seed_steps << " of " << budget.total_steps
              << " steps on " << counted(ctx.world.size(), "rank") << ", domain-balanced over "
              << counted(static_cast<std::int64_t>(config.data.domains.size()), "domain")
              << std::endl;
  const PhaseResult result = train_on_world(ctx, "seed");
  update_record(ctx, "seed");
  // The ELMs and the dense baseline of this run then start from a copy of the trained seed in
  // the engine, not from reading it back; kept on every rank or on none.
  if (result == PhaseResult::Done && ctx.keep_seed_state && ctx.engine) {
    const bool kept = ctx.engine->keep_state();
    if (ctx.world.allreduce_max(kept ? 0 : 1) == 0) {
      ctx.kept_state_of = file;
      ctx.kept_state_step = peek_checkpoint_in_group(ctx.world, file).step;
    } else {
      ctx.engine->drop_state();
    }
  }
  return result;
}

}  // namespace btm

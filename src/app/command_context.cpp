// command_context.cpp: command_context.hpp.
#include <filesystem>
#include <iostream>

#include "btm/app/cli.hpp"
#include "btm/app/commands.hpp"
#include "btm/data/corpus.hpp"
#include "btm/io/forest.hpp"
#include "btm/method/budget.hpp"
#include "btm/method/ensemble.hpp"
#include "btm/method/rank_layout.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/util/error.hpp"

#include "btm/app/command_context.hpp"
#include "btm/pipeline/preflight.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {
// Every train and held-out corpus exists and fits the model, checked before any work.
void check_corpora(RunContext& ctx) {
  collective_check(ctx.world, [&] {
    const Config& c = ctx.config;
    if (c.data.domains.empty())
      throw InputError("no train domains: set data.domains (e.g. --data.domains legal,code)");
    std::vector<std::string> all = c.data.domains;
    all.insert(all.end(), c.data.eval_domains.begin(), c.data.eval_domains.end());
    std::string tokenizer, hash;
    for (const std::string& d : all) {
      const fs::path file = fs::path(c.data.corpus) / (d + ".h5");
      if (!fs::exists(file))
        throw InputError("domain '" + d + "': no corpus at " + file.string() +
                         " (make it with btm prepare, or fix data.corpus / data.domains)");
      const CorpusInfo info = read_corpus_info(file);
      // Equal, not merely fitting: a byte corpus fits in GPT-2's 50,257 ids and would train a
      // GPT-2-vocabulary model on meaningless ids.
      if (info.vocab_size != c.model.vocab_size)
        throw InputError(file.string() + ": tokenizer " + info.tokenizer + " has " +
                         std::to_string(info.vocab_size) + " ids but model.vocab_size is " +
                         std::to_string(c.model.vocab_size) + ": set --model.vocab_size " +
                         std::to_string(info.vocab_size) +
                         ", or prepare the corpora with the model's tokenizer");
      if (!tokenizer.empty() &&
          (info.tokenizer != tokenizer ||
           (!hash.empty() && !info.vocab_hash.empty() && info.vocab_hash != hash)))
        throw InputError(file.string() + ": tokenizer " + info.tokenizer + " " + info.vocab_hash +
                         " differs from " + tokenizer + " " + hash +
                         " of the other domains: prepare all domains with one tokenizer");
      tokenizer = info.tokenizer;
      if (!info.vocab_hash.empty()) hash = info.vocab_hash;
    }
  });
}

}  // namespace

// --parents "a,b,c", or every trained ELM of the forest when it is not given.
std::vector<std::string> parents_or_trained_elms(const std::string& text, const Forest& forest,
                                                 const fs::path& run_dir,
                                                 const std::string& purpose) {
  std::vector<std::string> parents = split_list(text);
  if (parents.empty()) parents = forest.trained_elm_names();
  if (parents.empty()) throw InputError("no trained ELMs in " + run_dir.string() + " " + purpose);
  return parents;
}

// --weights "0.5,0.3,0.2" for `parents` ELMs: numbers, one per parent, normalised to sum 1.
std::vector<double> parse_parent_weights(const std::string& text, std::size_t parents) {
  std::vector<double> weights;
  for (const std::string& w : split_list(text)) {
    try {
      weights.push_back(std::stod(w));
    } catch (const std::exception&) {
      throw InputError("--weights: '" + w + "' is not a number");
    }
  }
  if (weights.size() != parents)
    throw InputError("--weights has " + std::to_string(weights.size()) + " values for " +
                     std::to_string(parents) + " parents");
  return ensemble::normalise_weights(weights);
}

// --max-steps-per-run, accepted by every training command.
po::options_description step_limit_option(std::int64_t& limit) {
  po::options_description options("Options");
  // clang-format off
  options.add_options()("max-steps-per-run", po::value(&limit)->default_value(0),
                        "train each model at most N steps in this invocation, then checkpoint and "
                        "exit with code 75 like a preempted job (0: no limit)");
  // clang-format on
  return options;
}

RunContext prepare_context(const std::string& command, const Config& config, MpiComm& world,
                           const Backends& backends, std::int64_t max_steps_per_run,
                           const PreflightPlan& plan) {
  RunContext ctx = make_context(config, world, backends);
  if (max_steps_per_run < 0) throw InputError("--max-steps-per-run must be >= 0");
  ctx.max_steps_per_run = max_steps_per_run;
  check_corpora(ctx);
  preflight(ctx, plan);
  collective_check(world, [&] {
    if (world.rank() != 0) return;
    ctx.lock = std::make_shared<RunLock>(ctx.run_dir, command);
    for (const fs::path& p : ctx.lock->removed())
      std::cout << "note: removed " << p.string()
                << ", a temporary file an interrupted write left behind" << std::endl;
    fs::create_directories(ctx.run_dir / "elms");
    fs::create_directories(ctx.run_dir / "metrics");
    Forest forest = load_forest(ctx.run_dir);  // refuses a corrupt manifest before any work
    if (!fs::exists(forest_file(ctx.run_dir))) {
      forest.config_ini = ctx.config_ini;
      forest.clusters = ctx.config.data.clusters;
      save_forest(ctx.run_dir, forest);
      return;
    }
    const std::vector<std::string> differ = differing_settings(
        config, config_from_ini(forest.config_ini, forest_file(ctx.run_dir).string()));
    if (!differ.empty()) {
      std::cout << "note: these settings differ from the ones this forest was started with; "
                   "existing checkpoints keep their own steps and global batch:";
      for (const std::string& d : differ) std::cout << "\n  " << d;
      std::cout << std::endl;
    }
  });
  install_stop_handlers();
  return ctx;
}

// The run's plan: the compute budget per phase and which group trains which ELM when.
std::string describe_plan(const Budget& budget, const RankLayout& layout) {
  return describe_budget(budget, layout.world) +
         describe_layout(layout, budget.elm_steps, budget.tokens_per_step(budget.elm_batch));
}

int stopped_exit(const RunContext& ctx) {
  if (ctx.leader())
    std::cout << (stop_requested() ? "stopped on a signal"
                                   : "stopped after --max-steps-per-run steps")
              << ": every unfinished model is checkpointed; run the same command again to "
                 "continue (exit code "
              << kExitPreempted << ")" << std::endl;
  return kExitPreempted;
}

}  // namespace btm

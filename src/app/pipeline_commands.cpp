// The pipeline commands: run, seed, branch, train, dense, layout, forest.
#include <filesystem>
#include <iomanip>
#include <iostream>

#include "btm/app/cli.hpp"
#include "btm/app/commands.hpp"
#include "btm/data/corpus.hpp"
#include "btm/eval/evaluate.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/forest.hpp"
#include "btm/method/average.hpp"
#include "btm/method/budget.hpp"
#include "btm/method/ensemble.hpp"
#include "btm/method/rank_layout.hpp"
#include "btm/model/params.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/util/error.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

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

// Every train and held-out corpus exists and fits the model, checked before any work.
void check_corpora(RunContext& ctx) {
  collective_check(ctx.world, [&] {
    const Config& c = ctx.config;
    if (c.data.domains.empty())
      throw InputError("no train domains: set data.domains (e.g. --data.domains legal,code)");
    std::vector<std::string> all = c.data.domains;
    all.insert(all.end(), c.data.eval_domains.begin(), c.data.eval_domains.end());
    std::string tokenizer;
    for (const std::string& d : all) {
      const fs::path file = fs::path(c.data.corpus) / (d + ".h5");
      if (!fs::exists(file))
        throw InputError("domain '" + d + "': no corpus at " + file.string() +
                         " (make it with btm prepare, or fix data.corpus / data.domains)");
      const CorpusInfo info = read_corpus_info(file);
      if (info.vocab_size > c.model.vocab_size)
        throw InputError(file.string() + ": tokenizer " + info.tokenizer + " has " +
                         std::to_string(info.vocab_size) + " ids but model.vocab_size is " +
                         std::to_string(c.model.vocab_size));
      if (!tokenizer.empty() && info.tokenizer != tokenizer)
        throw InputError(file.string() + ": tokenizer " + info.tokenizer + " differs from " +
                         tokenizer +
                         " of the other domains: prepare all domains with one tokenizer");
      tokenizer = info.tokenizer;
    }
  });
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

RunContext prepare_context(const Config& config, MpiComm& world, const Backends& backends,
                           std::int64_t max_steps_per_run) {
  RunContext ctx = make_context(config, world, backends);
  if (max_steps_per_run < 0) throw InputError("--max-steps-per-run must be >= 0");
  ctx.max_steps_per_run = max_steps_per_run;
  check_corpora(ctx);
  collective_check(world, [&] {
    if (world.rank() == 0) {
      fs::create_directories(ctx.run_dir / "elms");
      fs::create_directories(ctx.run_dir / "metrics");
      Forest forest = load_forest(ctx.run_dir);  // refuses a corrupt manifest before any work
      if (!fs::exists(forest_file(ctx.run_dir))) {
        forest.config_ini = ctx.config_ini;
        save_forest(ctx.run_dir, forest);
      } else if (forest.config_ini != ctx.config_ini) {
        std::cout << "note: the config differs from the one this forest was started with; "
                     "existing checkpoints keep their own step targets"
                  << std::endl;
      }
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
    std::cout << "stopped on a signal: every unfinished model is checkpointed; run the same "
                 "command again to continue (exit code "
              << kExitPreempted << ")" << std::endl;
  return kExitPreempted;
}

}  // namespace

int cmd_layout(const Args& args, MpiComm& world, const Backends&) {
  Config config;
  int world_size = 0;
  po::options_description options("Options");
  // clang-format off
  options.add_options()("world", po::value(&world_size),
                        "plan for this many ranks (default: the ranks started)");
  // clang-format on
  parse_command(
      "layout",
      "Print the rank layout (which ranks train which ELM, in which wave) and the step and\n"
      "token budget of every phase, without running anything.",
      args, options, &config, world.rank() == 0);
  if (world_size == 0) world_size = world.size();
  const std::vector<std::string> names = elm_names(config);
  const Budget budget = make_budget(config, static_cast<int>(names.size()));
  check_world(budget, world_size);
  const RankLayout layout = plan_layout(world_size, config.run.ranks_per_elm, names);
  if (world.rank() == 0) std::cout << describe_plan(budget, layout);
  return kExitOk;
}

int cmd_run(const Args& args, MpiComm& world, const Backends& backends) {
  Config config;
  bool dry_run = false;
  bool skip_eval = false;
  std::int64_t step_limit = 0;
  po::options_description options = step_limit_option(step_limit);
  // clang-format off
  options.add_options()("dry-run", po::bool_switch(&dry_run), "print the plan and exit")(
      "no-eval", po::bool_switch(&skip_eval), "stop after training (no evaluation phase)");
  // clang-format on
  parse_command(
      "run",
      "The whole pipeline on one forest directory: seed -> branch -> train -> merge ->\n"
      "dense baseline -> evaluation. Run it again after a crash or a preemption: finished\n"
      "models are kept, unfinished ones resume from their last checkpoint.",
      args, options, &config, world.rank() == 0);
  const std::vector<std::string> names = elm_names(config);
  const Budget budget = make_budget(config, static_cast<int>(names.size()));
  check_world(budget, world.size());
  const RankLayout layout = plan_layout(world.size(), config.run.ranks_per_elm, names);
  if (world.rank() == 0) std::cout << describe_plan(budget, layout) << std::flush;
  if (dry_run) return kExitOk;
  RunContext ctx = prepare_context(config, world, backends, step_limit);
  if (config.run.split == SplitMode::random) make_random_split(ctx);
  if (run_seed_phase(ctx) == PhaseResult::Stopped) return stopped_exit(ctx);
  run_branch_phase(ctx, names);
  if (run_train_phase(ctx, names) == PhaseResult::Stopped) return stopped_exit(ctx);
  if (config.run.dense && run_dense_phase(ctx) == PhaseResult::Stopped) return stopped_exit(ctx);
  if (!skip_eval) run_eval_phase(ctx);
  if (ctx.leader()) std::cout << "done: forest in " << ctx.run_dir.string() << std::endl;
  return kExitOk;
}

int cmd_seed(const Args& args, MpiComm& world, const Backends& backends) {
  Config config;
  std::int64_t step_limit = 0;
  parse_command("seed", "Train the seed LM on all train domains with the whole world.", args,
                step_limit_option(step_limit), &config, world.rank() == 0);
  check_world(make_budget(config, static_cast<int>(config.data.domains.size())), world.size());
  RunContext ctx = prepare_context(config, world, backends, step_limit);
  return run_seed_phase(ctx) == PhaseResult::Stopped ? stopped_exit(ctx) : kExitOk;
}

int cmd_branch(const Args& args, MpiComm& world, const Backends& backends) {
  Config config;
  std::string new_domain, weights_text, parents_text;
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("new-domain", po::value(&new_domain),
       "add one ELM for this domain, branched from a weighted average of existing ELMs")
      ("parents", po::value(&parents_text), "ELMs to average (default: every trained ELM)")
      ("weights", po::value(&weights_text),
       "their weights, comma separated (default: the forest's domain posterior on the new domain's "
       "validation text, top-k by eval.topk's first entry)");
  // clang-format on
  parse_command(
      "branch",
      "Create ELMs. Without --new-domain: every ELM of data.domains that has no checkpoint\n"
      "yet starts as a copy of the seed (weights, AdamW moments, schedule position).\n"
      "With --new-domain D: ELM D starts as a weighted average of existing ELMs.",
      args, options, &config, world.rank() == 0);
  RunContext ctx = prepare_context(config, world, backends, 0);
  if (new_domain.empty()) {
    if (config.run.split == SplitMode::random) make_random_split(ctx);
    run_branch_phase(ctx, elm_names(config));
    return kExitOk;
  }
  const Forest forest = load_forest(ctx.run_dir);
  const std::vector<std::string> parents =
      parents_or_trained_elms(parents_text, forest, ctx.run_dir, "to branch from");
  std::vector<double> weights;
  if (!weights_text.empty()) {
    weights = parse_parent_weights(weights_text, parents.size());
  } else {
    const int topk =
        config.eval.topk.empty() ? static_cast<int>(parents.size()) : config.eval.topk[0];
    weights = posterior_branch_weights(ctx, parents, new_domain, topk);
  }
  branch_from_average(ctx, new_domain, parents, weights);
  return kExitOk;
}

int cmd_train(const Args& args, MpiComm& world, const Backends& backends) {
  Config config;
  bool resume = false;
  std::int64_t step_limit = 0;
  po::options_description options = step_limit_option(step_limit);
  // clang-format off
  options.add_options()("resume", po::bool_switch(&resume),
                        "continue ELMs that already have a checkpoint (without it, an existing "
                        "partly trained checkpoint is an error, to protect it)");
  // clang-format on
  parse_command(
      "train",
      "Train the ELMs of data.domains, one group of run.ranks_per_elm ranks each, in waves.\n"
      "An ELM without a checkpoint starts from the seed if the forest has one, else from\n"
      "the initialisation (a plain LM on that domain).",
      args, options, &config, world.rank() == 0);
  RunContext ctx = prepare_context(config, world, backends, step_limit);
  const std::vector<std::string> names = elm_names(config);
  collective_check(world, [&] {
    for (const std::string& name : names) {
      const fs::path file = checkpoint_file(ctx.run_dir, name);
      // Trained before (it has metrics) but not finished: continuing must be asked for.
      if (!resume && fs::exists(file) && fs::exists(metrics_file(ctx.run_dir, name))) {
        const CheckpointInfo c = peek_checkpoint(file);
        if (!c.finished())
          throw InputError(file.string() + " exists at step " + std::to_string(c.step) + " of " +
                           std::to_string(c.target_steps) +
                           ": pass --resume to continue it, or choose another run.dir");
      }
    }
  });
  if (config.run.split == SplitMode::random) make_random_split(ctx);
  if (!decided_by_root(ctx.world,
                       [&] { return fs::exists(checkpoint_file(ctx.run_dir, "seed")); })) {
    // No seed: every ELM starts from the initialisation (seed of zero steps).
    Config from_scratch = config;
    from_scratch.run.seed_share = 0;
    RunContext scratch = ctx;
    scratch.config = from_scratch;
    if (run_seed_phase(scratch) == PhaseResult::Stopped) return stopped_exit(ctx);
  }
  run_branch_phase(ctx, names);
  return run_train_phase(ctx, names) == PhaseResult::Stopped ? stopped_exit(ctx) : kExitOk;
}

int cmd_dense(const Args& args, MpiComm& world, const Backends& backends) {
  Config config;
  std::int64_t step_limit = 0;
  parse_command(
      "dense",
      "Train the dense baseline: the forest's total budget (steps x global batch) on all\n"
      "ranks over all train domains, so forest and baseline are compute-matched.",
      args, step_limit_option(step_limit), &config, world.rank() == 0);
  check_world(make_budget(config, static_cast<int>(config.data.domains.size())), world.size());
  RunContext ctx = prepare_context(config, world, backends, step_limit);
  return run_dense_phase(ctx) == PhaseResult::Stopped ? stopped_exit(ctx) : kExitOk;
}

int cmd_forest(const Args& args, MpiComm& world, const Backends&) {
  std::string action, name, checkpoint, domain, run_dir = "run";
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("action", po::value(&action), "list | add | remove")
      ("run.dir", po::value(&run_dir)->default_value(run_dir), "the forest directory")
      ("name", po::value(&name), "add/remove: the ELM's name")
      ("checkpoint", po::value(&checkpoint), "add: a btm checkpoint file to copy into the forest")
      ("domain", po::value(&domain), "add: the domain it is an expert of (default: its name)");
  // clang-format on
  std::vector<std::string> rest = args;
  if (!rest.empty() && !rest[0].starts_with("-")) rest[0].insert(0, "--action=");
  parse_command("forest",
                "Manage a forest: `btm forest list`, `btm forest add --name N --checkpoint F`,\n"
                "`btm forest remove --name N` (drops it from the manifest; its files are kept).",
                rest, options, nullptr, world.rank() == 0);
  if (world.rank() != 0) return kExitOk;
  const fs::path dir(run_dir);
  if (!fs::exists(forest_file(dir)))
    throw InputError("no forest at " + forest_file(dir).string() +
                     " (run btm run or btm seed first)");
  Forest forest = load_forest(dir);
  if (action == "list" || action.empty()) {
    std::cout << std::left << std::setw(16) << "name" << std::setw(7) << "kind" << std::setw(10)
              << "status" << std::setw(9) << "steps" << std::setw(13) << "tokens"
              << "parents\n";
    for (const ModelRecord& r : forest.models) {
      std::string parents;
      for (std::size_t j = 0; j < r.parents.size(); ++j) {
        std::ostringstream w;
        w << r.parents[j] << "(" << std::setprecision(3) << r.parent_weights[j] << ")";
        if (j > 0) parents += ' ';
        parents += w.str();
      }
      std::cout << std::left << std::setw(16) << r.name << std::setw(7) << r.kind << std::setw(10)
                << r.status << std::setw(9) << r.steps << std::setw(13) << r.tokens << parents
                << "\n";
    }
    return kExitOk;
  }
  if (name.empty()) throw InputError("btm forest " + action + ": --name is required");
  if (action == "remove") {
    if (!forest.remove(name)) throw InputError("no model named '" + name + "' in " + run_dir);
    save_forest(dir, forest);
    std::cout << "removed '" << name << "' from the forest (its checkpoint stays in "
              << checkpoint_file(dir, name).string() << ")\n";
    return kExitOk;
  }
  if (action == "add") {
    if (checkpoint.empty()) throw InputError("btm forest add: --checkpoint is required");
    if (forest.find(name))
      throw InputError("a model named '" + name + "' is already in the forest");
    Checkpoint c = load_checkpoint(checkpoint);
    c.name = name;
    c.domains = {domain.empty() ? name : domain};
    c.target_steps = c.step;  // added as trained
    c.schedule_steps = std::max(c.schedule_steps, c.step);
    save_checkpoint(checkpoint_file(dir, name), c);
    ModelRecord r;
    r.name = name;
    r.kind = "elm";
    r.domains = c.domains;
    r.status = "trained";
    r.steps = c.step;
    r.tokens = static_cast<std::int64_t>(c.tokens);
    r.checkpoint = fs::path("elms") / (name + ".h5");
    forest.upsert(r);
    save_forest(dir, forest);
    std::cout << "added '" << name << "' (" << c.domains[0] << ") from " << checkpoint << "\n";
    return kExitOk;
  }
  throw InputError("btm forest: unknown action '" + action + "' (use list, add or remove)");
}

int cmd_eval(const Args& args, MpiComm& world, const Backends& backends) {
  Config config;
  parse_command(
      "eval",
      "The collective phase: per-token log-probabilities of every ELM (and the dense\n"
      "baseline) on every train and held-out domain, ensembles with the cached-prior domain\n"
      "posterior (top-1..K), the uniform mixture, parameter averages; writes RUN/eval.h5.",
      args, po::options_description("Options"), &config, world.rank() == 0);
  RunContext ctx = prepare_context(config, world, backends, 0);
  run_eval_phase(ctx);
  return kExitOk;
}

int cmd_average(const Args& args, MpiComm& world, const Backends& backends) {
  Config config;
  std::string name, parents_text, weights_text;
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("name", po::value(&name)->required(), "name of the averaged model (RUN/elms/NAME.h5)")
      ("parents", po::value(&parents_text), "ELMs to average (default: every trained ELM)")
      ("weights", po::value(&weights_text),
       "their weights, comma separated, normalised to sum 1 (default: uniform)");
  // clang-format on
  parse_command(
      "average",
      "Average ELM parameters, theta = sum_j w_j theta_j, into one checkpoint that is added\n"
      "to the forest as kind 'average' (evaluate it with btm logits, or branch from it).",
      args, options, &config, world.rank() == 0);
  RunContext ctx = prepare_context(config, world, backends, 0);
  collective_check(world, [&] {
    if (!ctx.leader()) return;
    Forest forest = load_forest(ctx.run_dir);
    if (forest.find(name) || fs::exists(checkpoint_file(ctx.run_dir, name)))
      throw InputError("a model named '" + name + "' already exists in " + ctx.run_dir.string());
    const std::vector<std::string> parents =
        parents_or_trained_elms(parents_text, forest, ctx.run_dir, "to average");
    const std::vector<double> weights =
        weights_text.empty() ? ensemble::normalise_weights(std::vector<double>(parents.size(), 1.0))
                             : parse_parent_weights(weights_text, parents.size());
    std::vector<fs::path> files;
    for (const std::string& p : parents) files.push_back(checkpoint_file(ctx.run_dir, p));
    Checkpoint out = average_checkpoints(files, weights, config.model, false);
    out.name = name;
    out.target_steps = out.step;
    out.batch = {};  // an average is evaluated or branched from, not trained
    out.config_ini = ctx.config_ini;
    save_checkpoint(checkpoint_file(ctx.run_dir, name), out);
    ModelRecord r;
    r.name = name;
    r.kind = "average";
    r.domains = out.domains;
    r.parents = parents;
    r.parent_weights = weights;
    r.status = "trained";
    r.steps = out.step;
    r.tokens = static_cast<std::int64_t>(out.tokens);
    r.flops = static_cast<double>(out.tokens) * train_flops_per_token(ParamLayout(config.model));
    r.checkpoint = fs::path("elms") / (name + ".h5");
    forest.upsert(r);
    save_forest(ctx.run_dir, forest);
    std::cout << "[average] " << name << " =";
    for (std::size_t j = 0; j < parents.size(); ++j)
      std::cout << " " << weights[j] << "*" << parents[j];
    std::cout << " -> " << checkpoint_file(ctx.run_dir, name).string() << std::endl;
  });
  return kExitOk;
}

}  // namespace btm

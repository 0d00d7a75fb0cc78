// btm average: a parameter average of ELMs as a checkpoint of the forest.
#include <filesystem>
#include <iostream>

#include "btm/app/cli.hpp"
#include "btm/app/command_context.hpp"
#include "btm/app/commands.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/forest.hpp"
#include "btm/method/average.hpp"
#include "btm/method/ensemble.hpp"
#include "btm/method/merge.hpp"
#include "btm/model/params.hpp"
#include "btm/util/error.hpp"

namespace btm {

namespace fs = std::filesystem;

int cmd_average(const Args& args, MpiComm& world, const Backends& backends) {
  Config config;
  std::string name, parents_text, weights_text, method_text = "average";
  MergeOptions merge;
  po::options_description options("Options");
  // clang-format off
  options.add_options()
      ("name", po::value(&name)->required(), "name of the averaged model (RUN/elms/NAME.h5)")
      ("parents", po::value(&parents_text), "ELMs to average (default: every trained ELM)")
      ("weights", po::value(&weights_text),
       "their weights, comma separated, normalised to sum 1 (default: uniform)")
      ("method", po::value(&method_text)->default_value(method_text),
       "average | task-arithmetic | ties | dare | dare-ties (README: merges)")
      ("lambda", po::value(&merge.lambda), "merges: scale of the task vector (eval.merge_lambda)")
      ("density", po::value(&merge.density),
       "ties: share of each tensor's task vector kept (eval.merge_density)")
      ("drop", po::value(&merge.drop), "dare, dare-ties: drop probability (eval.merge_drop)")
      ("seed", po::value(&merge.seed), "dare, dare-ties: seed of the drop masks (eval.merge_seed)");
  // clang-format on
  const po::variables_map given = parse_command(
      "average",
      "Average ELM parameters, theta = sum_j w_j theta_j, or merge their task vectors\n"
      "tau_j = theta_j - theta_seed (--method), into one checkpoint that is added to the\n"
      "forest as kind 'average' (evaluate it with btm logits, or branch from it). The merge\n"
      "parameters default to the eval.merge_* settings: --method ties of every ELM with\n"
      "uniform weights is the model btm eval scores as merge:ties:uniform.",
      args, options, &config, world.rank() == 0);
  const std::optional<MergeMethod> method = from_word<MergeMethod>(method_text);
  if (!method) throw InputError("--method " + method_text + ": give " + word_list<MergeMethod>());
  const MergeOptions defaults = merge_options(config.eval, *method);
  if (!given.count("lambda")) merge.lambda = defaults.lambda;
  if (!given.count("density")) merge.density = defaults.density;
  if (!given.count("drop")) merge.drop = defaults.drop;
  if (!given.count("seed")) merge.seed = defaults.seed;
  merge.method = *method;
  RunContext ctx = prepare_context("average", config, world, backends, 0, {{name}, false, false});
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
    Checkpoint out =
        merge.method == MergeMethod::average
            ? average_checkpoints(files, weights, config.model, false)
            : merge_checkpoints(files, weights, shared_seed(forest, ctx.run_dir, parents),
                                config.model, merge);
    out.name = name;
    out.target_steps = out.step;
    out.batch = {};  // an average is evaluated or branched from, not trained
    out.config_ini = ctx.config_ini;
    save_checkpoint(checkpoint_file(ctx.run_dir, name), out);
    ModelRecord r;
    r.name = name;
    r.kind = ModelKind::average;
    r.domains = out.domains;
    r.parents = parents;
    r.parent_weights = weights;
    r.status = ModelStatus::trained;
    r.steps = out.step;
    r.tokens = static_cast<std::int64_t>(out.tokens);
    r.flops = static_cast<double>(out.tokens) * train_flops_per_token(ParamLayout(config.model));
    r.checkpoint = fs::path("elms") / (name + ".h5");
    forest.upsert(r);
    save_forest(ctx.run_dir, forest);
    std::cout << "[average] " << name << " = " << describe_merge(merge) << " of";
    for (std::size_t j = 0; j < parents.size(); ++j)
      std::cout << " " << weights[j] << "*" << parents[j];
    std::cout << " -> " << checkpoint_file(ctx.run_dir, name).string() << std::endl;
  });
  return kExitOk;
}

}  // namespace btm

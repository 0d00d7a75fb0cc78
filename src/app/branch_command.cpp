// btm branch: ELMs from the seed, or a new domain from a weighted average of ELMs.

#include "btm/app/cli.hpp"
#include "btm/app/command_context.hpp"
#include "btm/app/commands.hpp"
#include "btm/eval/evaluate.hpp"
#include "btm/io/forest.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/util/error.hpp"

namespace btm {

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
  const std::vector<std::string> writes =
      new_domain.empty() ? elm_names(config) : std::vector<std::string>{new_domain};
  RunContext ctx = prepare_context("branch", config, world, backends, 0, {writes, false, false});
  collective_check(world, [&] {
    if (!new_domain.empty() && !std::filesystem::exists(domain_corpus(ctx, new_domain)))
      throw InputError("domain '" + new_domain + "': no corpus at " +
                       domain_corpus(ctx, new_domain).string() +
                       " (make it with btm prepare into data.corpus): an ELM is branched for a "
                       "domain it will train on");
  });
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

}  // namespace btm

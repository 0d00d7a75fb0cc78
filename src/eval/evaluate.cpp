#include "btm/eval/evaluate.hpp"
#include "btm/util/clock.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>

#include "btm/eval/combine.hpp"
#include "btm/eval/plan.hpp"
#include "btm/eval/score.hpp"
#include "btm/io/eval_file.hpp"
#include "btm/io/forest.hpp"
#include "btm/method/ensemble.hpp"
#include "btm/util/error.hpp"
#include "btm/util/format.hpp"

namespace btm {

namespace fs = std::filesystem;
namespace ens = ensemble;

namespace {

// The mean perplexities per method; without held-out domains their mean (over no domain) is left
// out, and a mean that is not known (NaN) is "-".
void print_means(const EvalResults& r) {
  const bool heldout = std::count(r.in_domain.begin(), r.in_domain.end(), 0.0) > 0;
  std::printf("[eval] perplexity (mean over train domains%s)\n",
              heldout ? " | held-out domains" : "; no held-out domains");
  int width = 28;  // the longest method name (merge:task-arithmetic:cached-prior is 34)
  for (const std::string& m : r.methods) width = std::max(width, static_cast<int>(m.size()));
  const auto cell = [](double x) {
    if (std::isnan(x)) return std::string(9, ' ') + "-";
    char text[32];
    std::snprintf(text, sizeof(text), "%10.3f", x);
    return std::string(text);
  };
  for (std::size_t m = 0; m < r.methods.size(); ++m) {
    std::string line = cell(r.mean_in_domain[m]);
    if (heldout) line += " | " + cell(r.mean_out_domain[m]);
    std::printf("  %-*s %s\n", width, r.methods[m].c_str(), line.c_str());
  }
  std::fflush(stdout);
}

}  // namespace

void run_eval_phase(RunContext& ctx) {
  const auto start = Clock::now();
  Forest forest;
  collective_check(ctx.world, [&] { forest = load_forest(ctx.run_dir); });
  const EvalPlan plan = plan_eval(ctx, forest);
  if (ctx.leader())
    std::cout << "[eval] " << counted(static_cast<std::int64_t>(plan.K()), "ELM")
              << (plan.with_dense ? " + dense" : "") << " on "
              << counted(static_cast<std::int64_t>(plan.D()), "domain") << " ("
              << ctx.config.data.domains.size() << " train, " << ctx.config.data.eval_domains.size()
              << " held-out)" << std::endl;

  EvalGroups groups = make_eval_groups(ctx);
  std::unique_ptr<Engine> engine = make_engine_for(ctx);

  // 1. Per-token log-probabilities of every model on every domain: test, and validation for the
  //    cached prior (ELMs only). The group leaders' engines keep the ELMs (not the dense model)
  //    for the averages.
  const auto score_start = Clock::now();
  const Scores scores = score_models(ctx, groups, *engine, plan.models, plan.sets, plan.K());
  const double score_s = seconds_since(score_start);

  // 2. Cached priors (rank 0), shared with every rank for the averaging weights.
  std::vector<double> priors(plan.D() * plan.K());  // [domain][elm]
  if (ctx.leader()) priors = cached_priors(ctx.config, plan, scores);
  ctx.world.broadcast_vector(priors, 0);

  // 3. Parameter averages: one model per distinct weight vector, formed by a weighted reduction
  //    over the group leaders and evaluated by group (u % G) on the domains that use it.
  const auto average_start = Clock::now();
  const AveragePlan averages = plan_averages(priors, plan.test, plan.K(), ctx.config.model.context);
  const std::vector<float> average_scores =
      score_averages(ctx, groups, *engine, averages, plan.test);
  const double average_s = seconds_since(average_start);

  // 3b. Merges of the task vectors (eval.merges): one model per method and distinct weight
  //     vector, formed from the checkpoints in batches, batch b by the leader of group (b % G),
  //     and scored by that group.
  const auto merge_start = Clock::now();
  const MergePlan merges = plan_merges(ctx, plan, averages);
  if (ctx.leader() && merges.size() > 0) {
    std::cout << "[eval] " << merges.size() << " merges of task vectors from the seed:";
    for (const MergeOptions& o : merges.methods) std::cout << " " << describe_merge(o);
    std::cout << std::endl;
  }
  const std::vector<float> merge_scores = score_merges(
      ctx, groups, *engine, merges,
      std::vector<fs::path>(plan.models.begin(),
                            plan.models.begin() + static_cast<std::ptrdiff_t>(plan.K())),
      plan.test);
  const double merge_s = seconds_since(merge_start);

  // 4. Combination and eval.h5 (rank 0).
  if (!ctx.leader()) {
    ctx.world.barrier();
    return;
  }
  // c-BTM: the routing weights of every test position, from the prefix's tokens alone.
  const auto route_start = Clock::now();
  const std::vector<std::vector<double>> routes =
      plan.clusters ? cluster_routes(ctx.config, plan) : std::vector<std::vector<double>>{};
  const double route_s = seconds_since(route_start);
  const auto combine_start = Clock::now();
  EvalResults results = combine(ctx.config, plan, scores, priors, averages, average_scores, merges,
                                merge_scores, routes);
  if (results.merges) results.merges->seconds = merge_s;
  const double combine_s = seconds_since(combine_start);
  results.config = ctx.config_ini;
  results.ranks = static_cast<std::int64_t>(ctx.world.size());
  results.score_seconds = score_s;
  results.average_seconds = average_s;
  results.combine_seconds = combine_s;
  results.route_seconds = route_s;
  results.compute = compute_table(ctx.run_dir, forest, plan.elms, plan.with_dense);
  results.checkpoints = plan.checkpoints;
  results.checkpoint_steps = plan.checkpoint_steps;
  write_eval_file(eval_file(ctx.run_dir), results);

  print_means(results);
  if (plan.clusters) {
    std::int64_t tokens = 0;
    for (std::int64_t t : results.tokens) tokens += t;
    std::printf(
        "[eval] cluster routing: %lld tokens in %.3f s (%.0f tokens/s), %.1f%% of the "
        "evaluation's %.1f s\n",
        static_cast<long long>(tokens), route_s,
        static_cast<double>(tokens) / std::max(route_s, 1e-9),
        100.0 * route_s / std::max(seconds_since(start), 1e-9), seconds_since(start));
  }
  std::printf(
      "[eval] wrote %s in %.1f s (log-probs %.1f s, of which reading checkpoints %.1f s, %zu "
      "models taken from memory instead; averages %.1f s, merges %.1f s, combination %.2f s)\n",
      eval_file(ctx.run_dir).c_str(), seconds_since(start), score_s, scores.read_s,
      scores.from_memory, average_s, merge_s, combine_s);
  std::fflush(stdout);
  ctx.world.barrier();
}

std::vector<double> posterior_branch_weights(RunContext& ctx,
                                             const std::vector<std::string>& parents,
                                             const std::string& domain, int topk) {
  const int T = ctx.config.model.context;
  EvalDomains domains = load_eval_domains(ctx, {domain}, {0.0});
  const BlockSet valid{
      &domains.corpora[0].split(Split::Valid),
      usable_blocks(domains.corpora[0].split(Split::Valid), T, ctx.config.eval.prior_blocks)};
  if (valid.blocks == 0)
    throw InputError("domain '" + domain + "': its validation split has no block of " +
                     std::to_string(T + 1) + " tokens to compute branch weights from");
  EvalGroups groups = make_eval_groups(ctx);
  std::unique_ptr<Engine> engine = make_engine_for(ctx);
  std::vector<fs::path> models;
  for (const std::string& p : parents) models.push_back(checkpoint_file(ctx.run_dir, p));
  const Scores scores = score_models(
      ctx, groups, *engine, models, std::vector<std::vector<BlockSet>>(parents.size(), {valid}), 0);
  std::vector<double> weights;
  if (ctx.leader()) {
    std::vector<std::span<const float>> per_elm;
    for (std::size_t j = 0; j < parents.size(); ++j)
      per_elm.emplace_back(scores.at(j, 0, 1), valid.blocks * static_cast<std::size_t>(T));
    const std::vector<double> pi = ens::cached_prior(
        ens::LogProbView(per_elm, static_cast<std::size_t>(T)), cached_prior_options(ctx.config));
    const std::size_t k =
        std::clamp<std::size_t>(static_cast<std::size_t>(std::max(topk, 1)), 1, pi.size());
    weights = ens::top_k(pi, k);
    std::cout << "[branch] domain posterior of '" << domain << "' over the forest (top-" << k
              << "):";
    for (std::size_t j = 0; j < parents.size(); ++j) std::cout << " " << parents[j] << "=" << pi[j];
    std::cout << std::endl;
  }
  ctx.world.broadcast_vector(weights, 0);
  return weights;
}

}  // namespace btm

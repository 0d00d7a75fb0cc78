#include "btm/eval/combine.hpp"

#include <algorithm>
#include <cstdint>
#include <exception>
#include <limits>
#include <span>

#include "btm/io/metrics.hpp"

namespace btm {

namespace fs = std::filesystem;
namespace ens = ensemble;

namespace {

double mean_over(const std::vector<double>& values, const std::vector<double>& in_domain,
                 double group) {
  double sum = 0;
  int count = 0;
  for (std::size_t d = 0; d < values.size(); ++d)
    if (in_domain[d] == group) {
      sum += values[d];
      ++count;
    }
  return count ? sum / count : std::numeric_limits<double>::quiet_NaN();
}

}  // namespace

ens::CachedPriorOptions cached_prior_options(const Config& config) {
  ens::CachedPriorOptions options;
  options.batch_blocks = static_cast<std::size_t>(config.eval.prior_batch);
  options.max_blocks = static_cast<std::size_t>(config.eval.prior_blocks);
  options.alpha = config.eval.prior_ema;
  options.form = config.eval.posterior;
  return options;
}

std::vector<double> cached_priors(const Config& config, const EvalPlan& plan,
                                  const Scores& scores) {
  const std::size_t D = plan.D(), K = plan.K(), S = 2 * D;
  const std::size_t T = static_cast<std::size_t>(config.model.context);
  const ens::CachedPriorOptions options = cached_prior_options(config);
  std::vector<double> priors(D * K);  // [domain][elm]
  for (std::size_t d = 0; d < D; ++d) {
    std::vector<std::span<const float>> per_elm;
    for (std::size_t j = 0; j < K; ++j)
      per_elm.emplace_back(scores.at(j, D + d, S), plan.valid[d].blocks * T);
    const std::vector<double> pi = ens::cached_prior(ens::LogProbView(per_elm, T), options);
    std::copy(pi.begin(), pi.end(), priors.begin() + static_cast<std::ptrdiff_t>(d * K));
  }
  return priors;
}

std::vector<std::vector<double>> cluster_routes(const Config& config, const EvalPlan& plan) {
  const double temperature = config.eval.cluster_temperature > 0 ? config.eval.cluster_temperature
                                                                 : plan.clusters->temperature;
  const PrefixRouter router(*plan.clusters, plan.elm_clusters, temperature);
  std::vector<std::vector<double>> routes;
  for (const BlockSet& set : plan.test)
    routes.push_back(route_blocks(router, set.tokens->data(), set.blocks, config.model.context));
  return routes;
}

EvalResults combine(const Config& config, const EvalPlan& plan, const Scores& scores,
                    const std::vector<double>& priors, const AveragePlan& averages,
                    const std::vector<float>& average_scores, const MergePlan& merges,
                    const std::vector<float>& merge_scores,
                    const std::vector<std::vector<double>>& routes) {
  const std::size_t D = plan.D(), K = plan.K(), S = 2 * D;
  const std::size_t T = static_cast<std::size_t>(config.model.context);
  const ens::PosteriorForm form = config.eval.posterior;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EvalResults r;
  r.elms = plan.elms;
  r.domains = plan.domains.names;
  r.in_domain = plan.domains.in_domain;
  r.posterior = field_text(config.eval.posterior);

  std::vector<int> topk = config.eval.topk;
  if (topk.empty())
    for (std::size_t k = 1; k <= K; ++k) topk.push_back(static_cast<int>(k));
  for (std::size_t j = 0; j < K; ++j) r.methods.push_back("elm:" + plan.elms[j]);
  for (int k : topk)
    if (static_cast<std::size_t>(k) <= K) r.methods.push_back("ensemble:top-" + std::to_string(k));
  if (!routes.empty())
    for (int k : topk)
      if (static_cast<std::size_t>(k) <= K)
        r.methods.push_back("ensemble:cluster-top-" + std::to_string(k));
  r.methods.push_back("ensemble:uniform-mixture");
  r.methods.push_back("ensemble:uniform-prior");
  for (ens::AverageScheme s : ens::kAverageSchemes)
    r.methods.push_back("average:" + std::string(ens::average_scheme_name(s)));
  const std::size_t S_merge = std::size(MergePlan::kSchemes);
  for (std::size_t mi = 0; mi < merges.methods.size(); ++mi)
    for (std::size_t s = 0; s < S_merge; ++s) r.methods.push_back(merges.row(mi, s));
  if (plan.with_dense) r.methods.push_back("dense");
  const std::size_t M = r.methods.size();

  std::vector<std::vector<double>> ppl(M, std::vector<double>(D, nan));  // [method][domain]
  r.tokens.resize(D);
  // The domains are independent and each is one thread's, in the serial order: the same bits on
  // any thread count. (A c-BTM forest of 16 ELMs on 26 domains spent 34 s here on one thread.)
  std::vector<std::exception_ptr> failed(D);
#pragma omp parallel for schedule(dynamic)
  for (std::size_t d = 0; d < D; ++d) try {
      const std::size_t N = plan.test[d].blocks * T;
      r.tokens[d] = static_cast<std::int64_t>(N);
      std::vector<std::span<const float>> per_elm;
      for (std::size_t j = 0; j < K; ++j) per_elm.emplace_back(scores.at(j, d, S), N);
      const ens::LogProbView view(per_elm, T);
      const std::span<const double> pi(priors.data() + d * K, K);
      std::size_t m = 0;
      for (std::size_t j = 0; j < K; ++j) ppl[m++][d] = ens::elm_perplexity(view, j);
      for (int k : topk)
        if (static_cast<std::size_t>(k) <= K)
          ppl[m++][d] =
              ens::ensemble_perplexity(view, ens::top_k(pi, static_cast<std::size_t>(k)), form);
      if (!routes.empty())
        for (int k : topk)
          if (static_cast<std::size_t>(k) <= K)
            ppl[m++][d] = ens::routed_perplexity(view, routes[d], static_cast<std::size_t>(k));
      ppl[m++][d] = ens::uniform_mixture_perplexity(view);
      ppl[m++][d] = ens::uniform_prior_perplexity(view, form);
      for (std::size_t s = 0; s < std::size(ens::kAverageSchemes); ++s) {
        const std::size_t u = averages.use[s * D + d];
        const std::size_t copy = averages.copy_of[u];
        ppl[m++][d] = copy != AveragePlan::kNotACopy
                          ? ens::elm_perplexity(view, copy)
                          : ens::perplexity(std::span<const float>(
                                average_scores.data() + averages.offset[u * D + d], N));
      }
      for (std::size_t mi = 0; mi < merges.methods.size(); ++mi)
        for (std::size_t s = 0; s < S_merge; ++s) {
          const std::size_t u = merges.use[(mi * S_merge + s) * D + d];
          ppl[m++][d] = ens::perplexity(
              std::span<const float>(merge_scores.data() + merges.offset[u * D + d], N));
        }
      if (plan.with_dense)
        ppl[m++][d] = ens::perplexity(std::span<const float>(scores.at(K, d, S), N));
    } catch (...) {
      failed[d] = std::current_exception();  // an exception may not leave an OpenMP loop
    }
  for (const std::exception_ptr& e : failed)
    if (e) std::rethrow_exception(e);
  for (std::size_t m = 0; m < M; ++m) {
    r.perplexity.insert(r.perplexity.end(), ppl[m].begin(), ppl[m].end());
    r.mean_in_domain.push_back(mean_over(ppl[m], r.in_domain, 1.0));
    r.mean_out_domain.push_back(mean_over(ppl[m], r.in_domain, 0.0));
  }
  r.priors = priors;
  for (ens::AverageScheme s : ens::kAverageSchemes)
    r.schemes.emplace_back(ens::average_scheme_name(s));
  for (const std::vector<double>& w : averages.weights)
    r.average_weights.insert(r.average_weights.end(), w.begin(), w.end());
  if (!merges.methods.empty()) {
    EvalMerges em;
    for (std::size_t mi = 0; mi < merges.methods.size(); ++mi)
      for (std::size_t s = 0; s < S_merge; ++s) {
        const MergeOptions& o = merges.methods[mi];
        em.rows.push_back(merges.row(mi, s));
        em.method.emplace_back(word_of(o.method));
        em.scheme.emplace_back(ens::average_scheme_name(MergePlan::kSchemes[s]));
        em.lambda.push_back(o.lambda);
        em.density.push_back(merge_uses_density(o.method) ? o.density : nan);
        em.drop.push_back(merge_uses_drop(o.method) ? o.drop : nan);
      }
    em.seed = static_cast<std::int64_t>(config.eval.merge_seed);
    em.base = "seed";
    r.merges = em;
  }
  return r;
}

EvalCompute compute_table(const fs::path& run_dir, const Forest& forest,
                          const std::vector<std::string>& elms, bool with_dense) {
  EvalCompute c;
  std::vector<std::string> order;
  if (forest.find("seed")) order.push_back("seed");
  order.insert(order.end(), elms.begin(), elms.end());
  if (with_dense) order.push_back("dense");
  std::int64_t seed_tokens = 0;
  for (const std::string& name : order) {
    const ModelRecord& r = *forest.find(name);
    c.models.push_back(name);
    // A model continues the seed's trajectory when it was branched from it (or continues it).
    const bool from_seed = r.parents == std::vector<std::string>{"seed"};
    c.continues.push_back(from_seed ? "seed" : "");
    c.steps.push_back(r.steps);
    c.global_batch.push_back(r.global_batch);
    c.tokens.push_back(r.tokens);
    c.flops.push_back(r.flops);
    const fs::path metrics = metrics_file(run_dir, name);
    const std::vector<MetricsRow> rows =
        fs::exists(metrics) ? MetricsLog::read(metrics) : std::vector<MetricsRow>{};
    c.train_seconds.push_back(rows.empty() ? 0.0 : rows.back().elapsed_s);
    if (name == "seed") seed_tokens = r.tokens;
    if (r.kind == ModelKind::elm) c.forest_tokens += r.tokens - (from_seed ? seed_tokens : 0);
    if (name == "dense") c.dense_tokens = r.tokens;
  }
  c.forest_tokens += seed_tokens;
  return c;
}

}  // namespace btm

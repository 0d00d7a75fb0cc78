#include "btm/eval/evaluate.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <map>

#include "btm/data/corpus.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/forest.hpp"
#include "btm/io/h5.hpp"
#include "btm/io/metrics.hpp"
#include "btm/method/ensemble.hpp"
#include "btm/method/rank_layout.hpp"
#include "btm/model/engine.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/util/error.hpp"

namespace btm {

namespace fs = std::filesystem;
namespace ens = ensemble;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The blocks scored on one split of one domain: the first `blocks` non-overlapping blocks of
// the context length (inputs t, targets t+1).
struct BlockSet {
  const TokenArray* tokens = nullptr;
  std::size_t blocks = 0;
};

std::size_t usable_blocks(const TokenArray& tokens, int T, std::int64_t limit) {
  const std::size_t available =
      tokens.size() > 0 ? (tokens.size() - 1) / static_cast<std::size_t>(T) : 0;
  return limit > 0 ? std::min(available, static_cast<std::size_t>(limit)) : available;
}

// The evaluation domains and their corpora, the same on every rank.
struct EvalDomains {
  std::vector<std::string> names;
  std::vector<double> in_domain;  // 1 train domain, 0 held-out
  std::vector<DomainCorpus> corpora;
};

EvalDomains load_eval_domains(RunContext& ctx, std::vector<std::string> names,
                              std::vector<double> in_domain) {
  EvalDomains d;
  d.names = std::move(names);
  d.in_domain = std::move(in_domain);
  collective_check(ctx.world, [&] {
    for (const std::string& name : d.names)
      d.corpora.push_back(load_corpus(fs::path(ctx.config.data.corpus) / (name + ".h5"),
                                      ctx.config.model.vocab_size));
  });
  return d;
}

// Log-probabilities of the model loaded in `engine` on `set`, written to out[block * T + t].
// Blocks go through the engine in fixed chunks of `batch` blocks; chunk c is scored by group
// rank c % size, so every number comes from the same computation whatever the rank count.
// Entries of chunks scored by other ranks are left untouched (zero).
void score(Engine& engine, const BlockSet& set, int T, int batch, const MpiComm& group,
           float* out) {
  std::vector<std::int32_t> inputs(static_cast<std::size_t>(batch) * T), targets(inputs.size());
  const std::size_t chunks =
      (set.blocks + static_cast<std::size_t>(batch) - 1) / static_cast<std::size_t>(batch);
  for (std::size_t c = static_cast<std::size_t>(group.rank()); c < chunks;
       c += static_cast<std::size_t>(group.size())) {
    const std::size_t first = c * static_cast<std::size_t>(batch);
    const int count = static_cast<int>(
        std::min<std::size_t>(static_cast<std::size_t>(batch), set.blocks - first));
    for (int b = 0; b < count; ++b) {
      const std::uint16_t* tokens = set.tokens->data() + (first + static_cast<std::size_t>(b)) * T;
      for (int t = 0; t < T; ++t) {
        inputs[static_cast<std::size_t>(b) * T + t] = tokens[t];
        targets[static_cast<std::size_t>(b) * T + t] = tokens[t + 1];
      }
    }
    engine.token_logprobs({inputs.data(), targets.data(), count, T}, out + first * T);
  }
}

// Sums `data` over the world onto rank 0 (each entry is written by one rank, the others hold
// zeros, so the sum is exact and independent of the rank count).
void gather_to_root(MpiComm& world, std::vector<float>& data) {
  world.reduce_sum(data.data(), data.size(), 0);
}

std::vector<float> load_params(MpiComm& group, const fs::path& file, const ModelConfig& model) {
  std::vector<float> params;
  collective_check(group, [&] { params = load_checkpoint(file, &model, false).params; });
  return params;
}

// Per-token log-probabilities of `models` on the `sets` (row-major [models][sets] arrays of
// sets[s].blocks * T floats), gathered on world rank 0. Model m is scored by group m % G.
// The group leaders' engines keep the parameters of models m < `parents` as parents for the
// parameter averages (Engine::hold_parent).
struct Scores {
  std::vector<std::size_t> offset;  // offset of (m, s) = offset[m * S + s]
  std::vector<float> data;
  const float* at(std::size_t m, std::size_t s, std::size_t S) const {
    return data.data() + offset[m * S + s];
  }
};

Scores score_models(RunContext& ctx, EvalGroups& groups, Engine& engine,
                    const std::vector<fs::path>& models,
                    const std::vector<std::vector<BlockSet>>& sets, std::size_t parents) {
  const int T = ctx.config.model.context;
  const std::size_t S = sets.empty() ? 0 : sets[0].size();
  Scores scores;
  std::size_t total = 0;
  for (std::size_t m = 0; m < models.size(); ++m)
    for (std::size_t s = 0; s < S; ++s) {
      scores.offset.push_back(total);
      total += sets[m][s].blocks * static_cast<std::size_t>(T);
    }
  scores.data.assign(total, 0.0f);
  for (std::size_t m = static_cast<std::size_t>(groups.index); m < models.size();
       m += static_cast<std::size_t>(groups.groups)) {
    std::vector<float> params = load_params(*groups.group, models[m], ctx.config.model);
    engine.set_params(params);
    for (std::size_t s = 0; s < S; ++s)
      if (sets[m][s].blocks > 0)
        score(engine, sets[m][s], T, ctx.config.data.batch, *groups.group,
              scores.data.data() + scores.offset[m * S + s]);
    if (groups.leader() && m < parents) engine.hold_parent(m, std::move(params));
  }
  gather_to_root(ctx.world, scores.data);
  return scores;
}

// The compute of every model the evaluation compared (forest.h5 and the metrics files), in
// eval.h5's /compute: what makes the forest-vs-dense comparison checkable from the file alone.
void write_compute(hid_t root, const RunContext& ctx, const Forest& forest,
                   const std::vector<std::string>& elms, bool with_dense) {
  std::vector<std::string> names, continues;
  std::vector<std::int64_t> steps, batch, tokens;
  std::vector<double> flops, seconds;
  std::vector<std::string> order;
  if (forest.find("seed")) order.push_back("seed");
  order.insert(order.end(), elms.begin(), elms.end());
  if (with_dense) order.push_back("dense");
  std::int64_t forest_tokens = 0, dense_tokens = 0, seed_tokens = 0;
  for (const std::string& name : order) {
    const ModelRecord& r = *forest.find(name);
    names.push_back(name);
    // A model continues the seed's trajectory when it was branched from it (or continues it).
    const bool from_seed = r.parents == std::vector<std::string>{"seed"};
    continues.push_back(from_seed ? "seed" : "");
    steps.push_back(r.steps);
    batch.push_back(r.global_batch);
    tokens.push_back(r.tokens);
    flops.push_back(r.flops);
    const fs::path metrics = metrics_file(ctx.run_dir, name);
    const std::vector<MetricsRow> rows =
        fs::exists(metrics) ? MetricsLog::read(metrics) : std::vector<MetricsRow>{};
    seconds.push_back(rows.empty() ? 0.0 : rows.back().elapsed_s);
    if (name == "seed") seed_tokens = r.tokens;
    if (r.kind == "elm") forest_tokens += r.tokens - (from_seed ? seed_tokens : 0);
    if (name == "dense") dense_tokens = r.tokens;
  }
  forest_tokens += seed_tokens;
  h5::Handle group = h5::create_group(root, "compute");
  h5::set_attr(group, "models", names);
  h5::set_attr(group, "continues", continues);
  h5::set_attr(group, "forest_tokens", forest_tokens);
  h5::set_attr(group, "dense_tokens", dense_tokens);
  h5::write_array(group, "steps", steps.data(), steps.size());
  h5::write_array(group, "global_batch", batch.data(), batch.size());
  h5::write_array(group, "tokens", tokens.data(), tokens.size());
  h5::write_array(group, "flops", flops.data(), flops.size());
  h5::write_array(group, "train_seconds", seconds.data(), seconds.size());
}

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

void print_means(const std::vector<std::string>& methods, const std::vector<double>& mean_in,
                 const std::vector<double>& mean_out) {
  std::printf("[eval] perplexity (mean over train domains | held-out domains)\n");
  for (std::size_t m = 0; m < methods.size(); ++m)
    std::printf("  %-28s %10.3f | %10.3f\n", methods[m].c_str(), mean_in[m], mean_out[m]);
  std::fflush(stdout);
}

}  // namespace

EvalGroups make_eval_groups(RunContext& ctx) {
  const int r = ctx.config.run.ranks_per_elm;
  check_ranks_per_elm(ctx.world.size(), r);
  EvalGroups g;
  g.groups = ctx.world.size() / r;
  g.index = ctx.world.rank() / r;
  g.group = ctx.world.split(g.index, ctx.world.rank());
  g.leaders = ctx.world.split(g.group->rank() == 0 ? 0 : 1, ctx.world.rank());
  return g;
}

void set_average_params(EvalGroups& g, Engine& engine, std::span<const double> weights,
                        int root_group) {
  const std::size_t n = engine.layout().total();
  std::vector<float> params;
  if (g.groups == 1) {
    // Every parent is held here: the sum is formed where the engine computes.
    if (g.leader()) engine.set_params_to_average(weights);
    if (g.group->size() == 1) return;
    params.resize(n);
    if (g.leader()) engine.get_params(params);
  } else {
    if (g.leader()) {
      fixed::Sum sum = fixed::Sum::for_weights(n, weights);
      engine.add_parents(weights, sum);
      if (g.leaders->allreduce_max(sum.bad()) > 0)
        throw SystemError(
            "parameter averaging: a parent parameter is outside the fixed-point "
            "range (|w x| > 2^23)");
      g.leaders->reduce_sum(sum.raw().data(), n, root_group);
      if (g.index == root_group) params = sum.result();
    }
    if (g.index != root_group) return;
    params.resize(n);
  }
  g.group->broadcast(params.data(), n * sizeof(float), 0);
  if (!g.leader() || g.groups > 1) engine.set_params(params);
}

void run_eval_phase(RunContext& ctx) {
  const auto start = Clock::now();
  const Config& config = ctx.config;
  const int T = config.model.context;
  Forest forest;
  collective_check(ctx.world, [&] { forest = load_forest(ctx.run_dir); });
  const std::vector<std::string> elms = forest.trained_elm_names();
  if (elms.empty())
    throw InputError("no trained ELMs in " + forest_file(ctx.run_dir).string() + " to evaluate");
  const ModelRecord* dense = forest.find("dense");
  const bool with_dense = dense && dense->status == "trained";
  const std::size_t K = elms.size();

  std::vector<std::string> names = config.data.domains;
  std::vector<double> in_domain(names.size(), 1.0);
  for (const std::string& d : config.data.eval_domains) {
    names.push_back(d);
    in_domain.push_back(0.0);
  }
  EvalDomains domains = load_eval_domains(ctx, names, in_domain);
  const std::size_t D = names.size();
  std::vector<BlockSet> test(D), valid(D);
  for (std::size_t d = 0; d < D; ++d) {
    test[d] = {&domains.corpora[d].split(Split::Test),
               usable_blocks(domains.corpora[d].split(Split::Test), T, config.eval.blocks)};
    valid[d] = {&domains.corpora[d].split(Split::Valid),
                usable_blocks(domains.corpora[d].split(Split::Valid), T, config.eval.prior_blocks)};
    if (test[d].blocks == 0 || valid[d].blocks == 0)
      throw InputError("domain '" + names[d] +
                       "': its test and validation splits need at least one block of " +
                       std::to_string(T + 1) +
                       " tokens (re-run btm prepare with more text or lower model.context)");
  }
  if (ctx.leader())
    std::cout << "[eval] " << K << " ELMs" << (with_dense ? " + dense" : "") << " on " << D
              << " domains (" << config.data.domains.size() << " train, "
              << config.data.eval_domains.size() << " held-out)" << std::endl;

  EvalGroups groups = make_eval_groups(ctx);
  std::unique_ptr<Engine> engine = make_engine_for(ctx);

  // 1. Per-token log-probabilities of every model on every domain: test, and validation for the
  //    cached prior (ELMs only). Only these arrays travel, never weights.
  std::vector<fs::path> models;
  std::vector<std::vector<BlockSet>> sets;
  for (const std::string& e : elms) {
    models.push_back(checkpoint_file(ctx.run_dir, e));
    std::vector<BlockSet> s = test;
    s.insert(s.end(), valid.begin(), valid.end());
    sets.push_back(s);
  }
  if (with_dense) {
    models.push_back(checkpoint_file(ctx.run_dir, "dense"));
    std::vector<BlockSet> s = test;
    s.insert(s.end(), D, BlockSet{});
    sets.push_back(s);
  }
  const auto score_start = Clock::now();
  // The group leaders' engines keep the ELMs (not the dense model) for the averages.
  Scores scores = score_models(ctx, groups, *engine, models, sets, K);
  const double score_s = seconds_since(score_start);

  // 2. Cached priors (rank 0), shared with every rank for the averaging weights.
  const ens::PosteriorForm form = config.eval.posterior;
  const std::size_t S = 2 * D;
  std::vector<double> priors(D * K);  // [domain][elm]
  if (ctx.leader()) {
    for (std::size_t d = 0; d < D; ++d) {
      std::vector<std::span<const float>> per_elm;
      for (std::size_t j = 0; j < K; ++j)
        per_elm.emplace_back(scores.at(j, D + d, S), valid[d].blocks * static_cast<std::size_t>(T));
      const ens::LogProbView view(per_elm, static_cast<std::size_t>(T));
      ens::CachedPriorOptions options;
      options.batch_blocks = static_cast<std::size_t>(config.eval.prior_batch);
      options.max_blocks = static_cast<std::size_t>(config.eval.prior_blocks);
      options.alpha = config.eval.prior_ema;
      options.form = form;
      const std::vector<double> pi = ens::cached_prior(view, options);
      std::copy(pi.begin(), pi.end(), priors.begin() + static_cast<std::ptrdiff_t>(d * K));
    }
  }
  ctx.world.broadcast_vector(priors, 0);

  // 3. Parameter averages: one model per distinct weight vector, formed by a weighted reduction
  //    over the group leaders and evaluated by group (u % G) on the domains that use it.
  const auto average_start = Clock::now();
  std::vector<std::vector<double>> average_weights;  // [scheme * D + d] -> weights
  std::vector<std::vector<double>> unique_weights;   // distinct vectors
  std::vector<std::size_t> use(std::size(ens::kAverageSchemes) * D);
  for (std::size_t s = 0; s < std::size(ens::kAverageSchemes); ++s)
    for (std::size_t d = 0; d < D; ++d) {
      const std::span<const double> pi(priors.data() + d * K, K);
      std::vector<double> w = ens::average_weights(ens::kAverageSchemes[s], pi);
      auto it = std::find(unique_weights.begin(), unique_weights.end(), w);
      use[s * D + d] = static_cast<std::size_t>(it - unique_weights.begin());
      if (it == unique_weights.end()) unique_weights.push_back(w);
      average_weights.push_back(std::move(w));
    }
  const std::size_t U = unique_weights.size();
  // A one-hot weight vector (argmax, or any scheme with one ELM) averages to that ELM exactly:
  // its scores are the ELM's, already gathered, so it is neither formed nor scored again.
  constexpr std::size_t kNotACopy = static_cast<std::size_t>(-1);
  std::vector<std::size_t> copy_of(U, kNotACopy);
  for (std::size_t u = 0; u < U; ++u) {
    const std::vector<double>& w = unique_weights[u];
    if (std::count(w.begin(), w.end(), 0.0) + 1 == static_cast<std::ptrdiff_t>(w.size())) {
      const auto one = std::find_if(w.begin(), w.end(), [](double x) { return x != 0.0; });
      if (*one == 1.0) copy_of[u] = static_cast<std::size_t>(one - w.begin());
    }
  }
  // Test log-probs of average u on domain d (only the domains that use it are scored).
  std::vector<std::size_t> avg_offset(U * D, 0);
  std::vector<std::size_t> avg_blocks(U * D, 0);
  std::size_t avg_total = 0;
  for (std::size_t u = 0; u < U; ++u)
    for (std::size_t d = 0; d < D; ++d) {
      bool used = false;
      for (std::size_t s = 0; s < std::size(ens::kAverageSchemes); ++s)
        used = used || use[s * D + d] == u;
      avg_offset[u * D + d] = avg_total;
      avg_blocks[u * D + d] = used && copy_of[u] == kNotACopy ? test[d].blocks : 0;
      avg_total += avg_blocks[u * D + d] * static_cast<std::size_t>(T);
    }
  std::vector<float> avg_scores(avg_total, 0.0f);
  for (std::size_t u = 0; u < U; ++u) {
    if (copy_of[u] != kNotACopy) continue;
    const int root_group = static_cast<int>(u % static_cast<std::size_t>(groups.groups));
    set_average_params(groups, *engine, unique_weights[u], root_group);
    if (groups.index != root_group) continue;
    for (std::size_t d = 0; d < D; ++d)
      if (avg_blocks[u * D + d] > 0)
        score(*engine, {test[d].tokens, avg_blocks[u * D + d]}, T, config.data.batch, *groups.group,
              avg_scores.data() + avg_offset[u * D + d]);
  }
  gather_to_root(ctx.world, avg_scores);
  engine->drop_parents();
  const double average_s = seconds_since(average_start);

  // 4. Combination and eval.h5 (rank 0).
  if (!ctx.leader()) {
    ctx.world.barrier();
    return;
  }
  const auto combine_start = Clock::now();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<std::string> methods;
  std::vector<std::vector<double>> ppl;
  std::vector<int> topk = config.eval.topk;
  if (topk.empty())
    for (std::size_t k = 1; k <= K; ++k) topk.push_back(static_cast<int>(k));
  for (std::size_t j = 0; j < K; ++j) methods.push_back("elm:" + elms[j]);
  for (int k : topk)
    if (static_cast<std::size_t>(k) <= K) methods.push_back("ensemble:top-" + std::to_string(k));
  methods.push_back("ensemble:uniform-mixture");
  methods.push_back("ensemble:uniform-prior");
  for (ens::AverageScheme s : ens::kAverageSchemes)
    methods.push_back("average:" + std::string(ens::average_scheme_name(s)));
  if (with_dense) methods.push_back("dense");
  ppl.assign(methods.size(), std::vector<double>(D, nan));
  std::vector<std::int64_t> tokens(D);
  for (std::size_t d = 0; d < D; ++d) {
    const std::size_t N = test[d].blocks * static_cast<std::size_t>(T);
    tokens[d] = static_cast<std::int64_t>(N);
    std::vector<std::span<const float>> per_elm;
    for (std::size_t j = 0; j < K; ++j) per_elm.emplace_back(scores.at(j, d, S), N);
    const ens::LogProbView view(per_elm, static_cast<std::size_t>(T));
    const std::span<const double> pi(priors.data() + d * K, K);
    std::size_t m = 0;
    for (std::size_t j = 0; j < K; ++j) ppl[m++][d] = ens::elm_perplexity(view, j);
    for (int k : topk)
      if (static_cast<std::size_t>(k) <= K)
        ppl[m++][d] =
            ens::ensemble_perplexity(view, ens::top_k(pi, static_cast<std::size_t>(k)), form);
    ppl[m++][d] = ens::uniform_mixture_perplexity(view);
    ppl[m++][d] = ens::uniform_prior_perplexity(view, form);
    for (std::size_t s = 0; s < std::size(ens::kAverageSchemes); ++s) {
      const std::size_t u = use[s * D + d];
      ppl[m++][d] = copy_of[u] != kNotACopy ? ens::elm_perplexity(view, copy_of[u])
                                            : ens::perplexity(std::span<const float>(
                                                  avg_scores.data() + avg_offset[u * D + d], N));
    }
    if (with_dense) ppl[m++][d] = ens::perplexity(std::span<const float>(scores.at(K, d, S), N));
  }
  std::vector<double> mean_in(methods.size()), mean_out(methods.size());
  for (std::size_t m = 0; m < methods.size(); ++m) {
    mean_in[m] = mean_over(ppl[m], domains.in_domain, 1.0);
    mean_out[m] = mean_over(ppl[m], domains.in_domain, 0.0);
  }
  const double combine_s = seconds_since(combine_start);

  h5::AtomicFile out(eval_file(ctx.run_dir));
  hid_t root = out.root();
  h5::set_attr(root, "format", std::string("btm-eval"));
  h5::set_attr(root, "format_version", std::int64_t{2});
  h5::set_attr(root, "config", ctx.config_ini);
  h5::set_attr(root, "elms", elms);
  h5::set_attr(root, "domains", names);
  h5::set_attr(root, "in_domain", domains.in_domain);
  h5::set_attr(root, "posterior", field_text(config.eval.posterior));
  h5::set_attr(root, "ranks", static_cast<std::int64_t>(ctx.world.size()));
  h5::set_attr(root, "score_seconds", score_s);
  h5::set_attr(root, "average_seconds", average_s);
  h5::set_attr(root, "combine_seconds", combine_s);
  std::vector<double> flat;
  for (const auto& row : ppl) flat.insert(flat.end(), row.begin(), row.end());
  h5::write_matrix(root, "perplexity", flat.data(), methods.size(), D);
  {
    h5::Handle set(BTM_H5(H5Dopen2(root, "perplexity", H5P_DEFAULT)));
    h5::set_attr(set, "methods", methods);
  }
  h5::write_array(root, "mean_in_domain", mean_in.data(), mean_in.size());
  h5::write_array(root, "mean_out_domain", mean_out.data(), mean_out.size());
  h5::write_matrix(root, "priors", priors.data(), D, K);
  std::vector<double> weights_flat;
  for (const auto& w : average_weights) weights_flat.insert(weights_flat.end(), w.begin(), w.end());
  {
    hsize_t dims[3] = {std::size(ens::kAverageSchemes), D, K};
    h5::Handle space(BTM_H5(H5Screate_simple(3, dims, nullptr)));
    h5::Handle set(BTM_H5(H5Dcreate2(root, "average_weights", H5T_NATIVE_DOUBLE, space, H5P_DEFAULT,
                                     H5P_DEFAULT, H5P_DEFAULT)));
    BTM_H5(H5Dwrite(set, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, weights_flat.data()));
    std::vector<std::string> schemes;
    for (ens::AverageScheme s : ens::kAverageSchemes)
      schemes.emplace_back(ens::average_scheme_name(s));
    h5::set_attr(set, "schemes", schemes);
  }
  h5::write_array(root, "tokens", tokens.data(), tokens.size());
  write_compute(root, ctx, forest, elms, with_dense);
  out.commit();

  print_means(methods, mean_in, mean_out);
  std::printf("[eval] wrote %s in %.1f s (log-probs %.1f s, averages %.1f s, combination %.2f s)\n",
              eval_file(ctx.run_dir).c_str(), seconds_since(start), score_s, average_s, combine_s);
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
    ens::CachedPriorOptions options;
    options.batch_blocks = static_cast<std::size_t>(ctx.config.eval.prior_batch);
    options.max_blocks = static_cast<std::size_t>(ctx.config.eval.prior_blocks);
    options.alpha = ctx.config.eval.prior_ema;
    options.form = ctx.config.eval.posterior;
    const std::vector<double> pi =
        ens::cached_prior(ens::LogProbView(per_elm, static_cast<std::size_t>(T)), options);
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

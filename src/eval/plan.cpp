#include "btm/eval/plan.hpp"

#include <algorithm>
#include <iostream>

#include "btm/io/checkpoint.hpp"
#include "btm/method/ensemble.hpp"
#include "btm/model/params.hpp"
#include "btm/util/error.hpp"
#include "btm/util/host_memory.hpp"

namespace btm {

namespace fs = std::filesystem;
namespace ens = ensemble;

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

EvalPlan plan_eval(RunContext& ctx, const Forest& forest) {
  const Config& config = ctx.config;
  const int T = config.model.context;
  EvalPlan plan;
  plan.elms = forest.trained_elm_names();
  if (plan.elms.empty())
    throw InputError("no trained ELMs in " + forest_file(ctx.run_dir).string() + " to evaluate");
  for (int k : config.eval.topk)
    if (static_cast<std::size_t>(k) > plan.elms.size())
      throw InputError("eval.topk lists " + std::to_string(k) + ", but " +
                       forest_file(ctx.run_dir).string() + " has " +
                       std::to_string(plan.elms.size()) +
                       " trained ELMs: list ensemble sizes up to that (or leave eval.topk out "
                       "for 1..K)");
  const ModelRecord* dense = forest.find("dense");
  plan.with_dense = dense && dense->status == ModelStatus::trained;

  std::vector<std::string> names = config.data.domains;
  std::vector<double> in_domain(names.size(), 1.0);
  for (const std::string& d : config.data.eval_domains) {
    names.push_back(d);
    in_domain.push_back(0.0);
  }
  plan.domains = load_eval_domains(ctx, names, in_domain);
  const std::size_t D = plan.D();
  plan.test.resize(D);
  plan.valid.resize(D);
  for (std::size_t d = 0; d < D; ++d) {
    const DomainCorpus& corpus = plan.domains.corpora[d];
    plan.test[d] = {&corpus.split(Split::Test),
                    usable_blocks(corpus.split(Split::Test), T, config.eval.blocks)};
    plan.valid[d] = {&corpus.split(Split::Valid),
                     usable_blocks(corpus.split(Split::Valid), T, config.eval.prior_blocks)};
    if (plan.test[d].blocks == 0 || plan.valid[d].blocks == 0)
      throw InputError("domain '" + names[d] +
                       "': its test and validation splits need at least one block of " +
                       std::to_string(T + 1) +
                       " tokens (re-run btm prepare with more text or lower model.context)");
  }

  // Every model has the configured shape, checked by rank 0 before any group loads one: a group
  // that failed alone would leave the others waiting in the gather.
  collective_check(ctx.world, [&] {
    if (!ctx.leader()) return;
    std::vector<std::string> all = plan.elms;
    if (plan.with_dense) all.push_back("dense");
    // The merges' task vectors start from the seed: it must be there, before any model runs.
    if (!config.eval.merges.empty()) {
      shared_seed(forest, ctx.run_dir, plan.elms);
      all.push_back("seed");
    }
    for (const std::string& name : all) {
      const fs::path file = checkpoint_file(ctx.run_dir, name);
      const CheckpointInfo c = peek_checkpoint(file);
      if (!(c.model == config.model))
        throw InputError(file.string() + ": model shape " + describe_model(c.model) +
                         " differs from the forest's " + describe_model(config.model) +
                         ": only models of the forest's shape can be evaluated together (btm "
                         "forest remove it)");
      plan.checkpoints.push_back(name);
      plan.checkpoint_steps.push_back(c.step);
    }
  });
  const fs::path clusters = !config.data.clusters.empty() ? config.data.clusters : forest.clusters;
  if (!clusters.empty())
    collective_check(ctx.world, [&] {
      if (!ctx.leader()) return;
      ClusterModel model = read_clusters(clusters);
      const CorpusInfo& info = plan.domains.corpora.front().info;
      check_cluster_tokenizer(model, clusters, info.tokenizer, info.vocab_size, 0);
      for (const std::string& e : plan.elms) {
        const ModelRecord& r = *forest.find(e);
        const std::optional<std::size_t> c =
            r.domains.size() == 1 ? cluster_of(r.domains[0]) : std::nullopt;
        if (!c || *c >= model.K) {
          std::cout << "[eval] note: ELM '" << e << "' does not train on one cluster of "
                    << clusters.string() << ": no rows ensemble:cluster-top-k" << std::endl;
          plan.elm_clusters.clear();
          return;
        }
        plan.elm_clusters.push_back(*c);
      }
      plan.clusters = std::move(model);
    });
  for (const std::string& e : plan.elms) {
    plan.models.push_back(checkpoint_file(ctx.run_dir, e));
    std::vector<BlockSet> s = plan.test;
    s.insert(s.end(), plan.valid.begin(), plan.valid.end());
    plan.sets.push_back(s);
  }
  if (plan.with_dense) {
    plan.models.push_back(checkpoint_file(ctx.run_dir, "dense"));
    std::vector<BlockSet> s = plan.test;
    s.insert(s.end(), D, BlockSet{});
    plan.sets.push_back(s);
  }
  return plan;
}

AveragePlan plan_averages(const std::vector<double>& priors, const std::vector<BlockSet>& test,
                          std::size_t K, int T) {
  const std::size_t D = test.size(), S = std::size(ens::kAverageSchemes);
  AveragePlan plan;
  plan.use.resize(S * D);
  for (std::size_t s = 0; s < S; ++s)
    for (std::size_t d = 0; d < D; ++d) {
      const std::span<const double> pi(priors.data() + d * K, K);
      std::vector<double> w = ens::average_weights(ens::kAverageSchemes[s], pi);
      auto it = std::find(plan.unique.begin(), plan.unique.end(), w);
      plan.use[s * D + d] = static_cast<std::size_t>(it - plan.unique.begin());
      if (it == plan.unique.end()) plan.unique.push_back(w);
      plan.weights.push_back(std::move(w));
    }
  const std::size_t U = plan.unique.size();
  plan.copy_of.assign(U, AveragePlan::kNotACopy);
  for (std::size_t u = 0; u < U; ++u) {
    const std::vector<double>& w = plan.unique[u];
    if (std::count(w.begin(), w.end(), 0.0) + 1 == static_cast<std::ptrdiff_t>(w.size())) {
      const auto one = std::find_if(w.begin(), w.end(), [](double x) { return x != 0.0; });
      if (*one == 1.0) plan.copy_of[u] = static_cast<std::size_t>(one - w.begin());
    }
  }
  plan.offset.assign(U * D, 0);
  plan.blocks.assign(U * D, 0);
  for (std::size_t u = 0; u < U; ++u)
    for (std::size_t d = 0; d < D; ++d) {
      bool used = false;
      for (std::size_t s = 0; s < S; ++s) used = used || plan.use[s * D + d] == u;
      plan.offset[u * D + d] = plan.total;
      plan.blocks[u * D + d] =
          used && plan.copy_of[u] == AveragePlan::kNotACopy ? test[d].blocks : 0;
      plan.total += plan.blocks[u * D + d] * static_cast<std::size_t>(T);
    }
  return plan;
}

std::string MergePlan::row(std::size_t m, std::size_t s) const {
  return "merge:" + std::string(word_of(methods[m].method)) + ":" +
         std::string(ens::average_scheme_name(kSchemes[s]));
}

MergePlan plan_merges(const RunContext& ctx, const EvalPlan& plan, const AveragePlan& averages) {
  MergePlan merges;
  if (ctx.config.eval.merges.empty()) return merges;
  merges.seed = checkpoint_file(ctx.run_dir, "seed");  // plan_eval checked it (shared_seed)
  for (const std::string& word : ctx.config.eval.merges)
    merges.methods.push_back(merge_options(ctx.config.eval, *from_word<MergeMethod>(word)));
  const std::size_t D = plan.D(), S = std::size(MergePlan::kSchemes);
  for (std::size_t m = 0; m < merges.methods.size(); ++m)
    for (std::size_t s = 0; s < S; ++s) {
      const std::size_t scheme = static_cast<std::size_t>(
          std::find(std::begin(ens::kAverageSchemes), std::end(ens::kAverageSchemes),
                    MergePlan::kSchemes[s]) -
          std::begin(ens::kAverageSchemes));
      for (std::size_t d = 0; d < D; ++d) {
        const std::vector<double>& w = averages.weights[scheme * D + d];
        std::size_t u = 0;
        while (u < merges.size() && !(merges.method_of[u] == m && merges.weights[u] == w)) ++u;
        if (u == merges.size()) {
          merges.method_of.push_back(m);
          merges.weights.push_back(w);
        }
        merges.use.push_back(u);
      }
    }
  const std::size_t U = merges.size();
  const std::size_t T = static_cast<std::size_t>(ctx.config.model.context);
  merges.blocks.assign(U * D, 0);
  merges.offset.assign(U * D, 0);
  for (std::size_t u = 0; u < U; ++u)
    for (std::size_t d = 0; d < D; ++d) {
      bool used = false;
      for (std::size_t s = 0; s < S; ++s)
        used = used || merges.use[(merges.method_of[u] * S + s) * D + d] == u;
      merges.offset[u * D + d] = merges.total;
      merges.blocks[u * D + d] = used ? plan.test[d].blocks : 0;
      merges.total += merges.blocks[u * D + d] * T;
    }
  // Host memory of a batch's accumulators: at most 32 GiB and half the memory rank 0 has left
  // (one number for every rank: the batches are the same plan everywhere), and at least one
  // merge per batch.
  double batch_bytes = std::min(32.0 * (1ull << 30), available_host_bytes() / 2);
  ctx.world.broadcast(&batch_bytes, sizeof(batch_bytes), 0);
  const double n = static_cast<double>(ParamLayout(ctx.config.model).total());
  for (std::size_t u = 0; u < U;) {
    const std::size_t m = merges.method_of[u];
    const std::size_t fit = std::max<std::size_t>(
        1,
        static_cast<std::size_t>(
            batch_bytes /
            (n * static_cast<double>(TaskVectorMerge::bytes_per_merge(merges.methods[m].method)))));
    std::size_t end = u;
    while (end < U && merges.method_of[end] == m && end - u < fit) ++end;
    merges.batches.emplace_back(u, end);
    u = end;
  }
  return merges;
}

}  // namespace btm

// plan.hpp: what the evaluation phase scores, decided the same on every rank before a model
// runs: the evaluation domains and their block sets, the models and the block sets each one is
// scored on; and, once the cached priors are known, the parameter averages: every scheme's weight
// vector on every domain, the distinct vectors to form, the ones that are one ELM exactly, and
// the test blocks each average is scored on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "btm/data/corpus.hpp"
#include "btm/io/forest.hpp"
#include "btm/method/cluster.hpp"
#include "btm/method/ensemble.hpp"
#include "btm/method/merge.hpp"
#include "btm/pipeline/blocks.hpp"
#include "btm/pipeline/run_context.hpp"

namespace btm {

// BlockSet and usable_blocks: pipeline/blocks.hpp.

// The evaluation domains and their corpora (data.corpus/NAME.h5), the same on every rank.
struct EvalDomains {
  std::vector<std::string> names;
  std::vector<double> in_domain;  // 1 train domain, 0 held-out
  std::vector<DomainCorpus> corpora;
};
EvalDomains load_eval_domains(RunContext& ctx, std::vector<std::string> names,
                              std::vector<double> in_domain);

// The scoring plan of the evaluation phase. Its block sets point into its own corpora: it moves,
// it does not copy.
struct EvalPlan {
  std::vector<std::string> elms;  // the trained ELMs, in manifest order (j = 0..K-1)
  bool with_dense = false;        // the dense baseline is trained and compared
  EvalDomains domains;            // data.domains, then data.eval_domains (held out)
  std::vector<BlockSet> test;     // [domain] eval.blocks test blocks
  std::vector<BlockSet> valid;    // [domain] eval.prior_blocks validation blocks (cached prior)
  // The models scored, the ELMs then the dense model, and the block sets of each: an ELM's are
  // test[0..D) then valid[0..D); the dense model's test[0..D) then D empty sets.
  std::vector<std::filesystem::path> models;
  std::vector<std::vector<BlockSet>> sets;
  // c-BTM routing (data.clusters, else the clusters forest.h5 records): the clustering, on world
  // rank 0 only, and the cluster of each ELM. Empty when the forest's domains are not clusters,
  // or when some ELM does not train on exactly one of them (a note says so).
  std::optional<ClusterModel> clusters;
  std::vector<std::size_t> elm_clusters;  // [K]
  // Rank 0 only: every checkpoint the evaluation reads (the ELMs, dense, the merges' seed) and
  // its step then (eval.h5 /checkpoint_steps).
  std::vector<std::string> checkpoints;
  std::vector<std::int64_t> checkpoint_steps;

  std::size_t K() const { return elms.size(); }
  std::size_t D() const { return domains.names.size(); }

  EvalPlan() = default;
  EvalPlan(EvalPlan&&) = default;
  EvalPlan& operator=(EvalPlan&&) = default;
  EvalPlan(const EvalPlan&) = delete;
  EvalPlan& operator=(const EvalPlan&) = delete;
};

// The plan for `forest` (collective: loads the corpora on every rank). InputError where the
// forest has no trained ELM, a domain's test or validation split has no whole block, eval.merges
// is set and the forest has no shared seed of the forest's shape, or the clusters file is
// unreadable or of another tokenizer than the corpora.
EvalPlan plan_eval(RunContext& ctx, const Forest& forest);

// The parameter averages of the evaluation: for every scheme s (ensemble::kAverageSchemes) and
// domain d the weights the scheme gives the cached prior of d, formed once per distinct vector u.
// A one-hot vector (argmax, or any scheme with one ELM) averages to that ELM exactly: its scores
// are the ELM's, so it is neither formed nor scored.
struct AveragePlan {
  static constexpr std::size_t kNotACopy = static_cast<std::size_t>(-1);
  std::vector<std::vector<double>> weights;  // [s * D + d]
  std::vector<std::vector<double>> unique;   // [u] the distinct weight vectors
  std::vector<std::size_t> use;              // [s * D + d] -> u
  std::vector<std::size_t> copy_of;          // [u] the ELM a one-hot vector is, else kNotACopy
  // The test blocks of domain d average u is scored on (those of the domains that use it, none
  // for a copy), and where its log-probabilities start in the averages' scores.
  std::vector<std::size_t> blocks;  // [u * D + d]
  std::vector<std::size_t> offset;  // [u * D + d]
  std::size_t total = 0;            // floats of the averages' scores
};

// `priors` is [D x K] (row d: the cached prior of domain d), `test` the plan's test sets.
AveragePlan plan_averages(const std::vector<double>& priors, const std::vector<BlockSet>& test,
                          std::size_t K, int T);

// The merges of the evaluation (eval.merges, method/merge.hpp): every method m with the weights
// of the average schemes uniform and cached-prior (`schemes`) on every domain, formed once per
// distinct (method, weight vector) u and scored on the test blocks of the domains that use it.
// Rows merge:METHOD:SCHEME. A merge of one parent is not that parent (TIES trims it), so none is
// a copy. The merges of one method are formed together in batches (TaskVectorMerge: each parent
// read once per batch), as many as fit in kMergeBatchBytes of host memory.
struct MergePlan {
  static constexpr ensemble::AverageScheme kSchemes[] = {ensemble::AverageScheme::uniform,
                                                         ensemble::AverageScheme::cached_prior};
  std::filesystem::path seed;                // the base of the task vectors (shared_seed)
  std::vector<MergeOptions> methods;         // [m] eval.merges with the eval.merge_* parameters
  std::vector<std::size_t> method_of;        // [u] -> m
  std::vector<std::vector<double>> weights;  // [u]
  std::vector<std::size_t> use;              // [(m * S + s) * D + d] -> u, S = size(kSchemes)
  std::vector<std::size_t> blocks;           // [u * D + d] test blocks of domain d u is scored on
  std::vector<std::size_t> offset;           // [u * D + d] where they start in the merge scores
  std::size_t total = 0;                     // floats of the merge scores
  // [b] the merges [first, second) of one method, formed together by the leader of group b % G
  std::vector<std::pair<std::size_t, std::size_t>> batches;
  std::size_t size() const { return weights.size(); }
  // "merge:ties:cached-prior"
  std::string row(std::size_t m, std::size_t s) const;
};

// The merges of eval.merges over the averages' weight vectors (`averages`); empty without any.
// (plan_eval has checked the forest's seed.)
MergePlan plan_merges(const RunContext& ctx, const EvalPlan& plan, const AveragePlan& averages);

}  // namespace btm

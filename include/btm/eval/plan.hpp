// plan.hpp: what the evaluation phase scores, decided the same on every rank before a model
// runs: the evaluation domains and their block sets, the models and the block sets each one is
// scored on; and, once the cached priors are known, the parameter averages: every scheme's weight
// vector on every domain, the distinct vectors to form, the ones that are one ELM exactly, and
// the test blocks each average is scored on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "btm/data/corpus.hpp"
#include "btm/io/forest.hpp"
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

  std::size_t K() const { return elms.size(); }
  std::size_t D() const { return domains.names.size(); }

  EvalPlan() = default;
  EvalPlan(EvalPlan&&) = default;
  EvalPlan& operator=(EvalPlan&&) = default;
  EvalPlan(const EvalPlan&) = delete;
  EvalPlan& operator=(const EvalPlan&) = delete;
};

// The plan for `forest` (collective: loads the corpora on every rank). InputError where the
// forest has no trained ELM or a domain's test or validation split has no whole block.
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

}  // namespace btm

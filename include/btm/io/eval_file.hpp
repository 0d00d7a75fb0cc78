// eval_file.hpp: RUN/eval.h5, the results of the collective evaluation (eval/evaluate.hpp), the
// one place in C++ that knows its layout. tools/btm_files.py is the Python side of the same
// layout (tools/report.py reads through it, tools/make_fake_eval.py writes through it).
//   root attributes: format="btm-eval", format_version, config (the run's INI text), elms (names,
//     order j), domains (evaluation domains), in_domain (1.0 train domain, 0.0 held-out),
//     posterior (eval.posterior), ranks (world size of the evaluation), score_seconds,
//     average_seconds, combine_seconds (the phase's steps), route_seconds (the cluster routing of
//     the rows ensemble:cluster-top-k, 0 without), btm_version, btm_commit (build_info.hpp),
//     written_at (ISO 8601 UTC)
//   dimension scales (HDF5 H5DS; h5py: f["perplexity"].dims[1].label, f["perplexity"].dims[1][0]):
//     /methods /domains /elms /schemes (strings), attached to every dimension below that they
//     index, labelled method, domain, elm, scheme
//   /perplexity       float64 [methods, domains], attribute methods: "elm:NAME",
//                     "ensemble:top-k" (k = 1..K), "ensemble:cluster-top-k" (c-BTM routing,
//                     data.clusters), "ensemble:uniform-mixture",
//                     "ensemble:uniform-prior", "average:uniform", "average:cached-prior",
//                     "average:argmax", "merge:METHOD:SCHEME" (eval.merges), "dense"; NaN
//                     where not evaluated
//   /loss             float64 [methods, domains]  log(perplexity): nats per token (units)
//   /mean_in_domain /mean_out_domain  float64 [methods]
//   /priors           float64 [domains, K]  cached prior of each evaluation domain
//   /average_weights  float64 [schemes, domains, K], attribute schemes
//   /tokens           int64 [domains]   test tokens scored per domain
//   /compute          the models compared (seed, ELMs, dense; attribute models, continues =
//                     "seed" where a model's trajectory starts as the seed's): datasets steps,
//                     global_batch (sequences per step of its own phase), tokens, flops (over
//                     the lineage), train_seconds (its own phase, from its metrics); attributes
//                     forest_tokens (seed + every ELM's own), dense_tokens
//   /merges           (only with eval.merges) the parameters of the merge rows: attributes rows
//                     (the /perplexity rows "merge:METHOD:SCHEME"), method, scheme (the average
//                     scheme whose weights it merges with: /average_weights), lambda, density,
//                     drop (per row, NaN where the method has no such parameter), seed (of the
//                     DARE masks), base (the model the task vectors start from), seconds
//   /checkpoint_steps int64 [checkpoints]  the step of every checkpoint the evaluation read
//                     (the ELMs, dense, the merges' seed), dimension scale /checkpoints (names)
//   /compute's datasets have the dimension scale /compute/models (label model)
//   format_version 3 (2: without the scales, /loss, /checkpoint_steps and the build; 1: without
//   /compute too; all are read)
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace btm {

inline constexpr const char* kEvalFormat = "btm-eval";
inline constexpr std::int64_t kEvalFormatVersion = 3;  // 1 and 2 are read too

// /compute: one entry per compared model, in the order of `models`.
struct EvalCompute {
  std::vector<std::string> models;     // seed (where the forest has one), the ELMs, dense
  std::vector<std::string> continues;  // "seed" where the model's trajectory starts as the seed's
  std::vector<std::int64_t> steps;
  std::vector<std::int64_t> global_batch;  // sequences per step of its own phase
  std::vector<std::int64_t> tokens;        // over the lineage
  std::vector<double> flops;               // over the lineage
  std::vector<double> train_seconds;       // its own phase, from its metrics (0 without)
  std::int64_t forest_tokens = 0;          // seed + every ELM's own
  std::int64_t dense_tokens = 0;           // 0 without a dense model
};

// /merges: one entry per merge row of /perplexity.
struct EvalMerges {
  std::vector<std::string> rows;    // "merge:METHOD:SCHEME"
  std::vector<std::string> method;  // task-arithmetic | ties | dare | dare-ties
  std::vector<std::string> scheme;  // uniform | cached-prior
  std::vector<double> lambda;       // scale of the merged task vector
  std::vector<double> density;      // ties: share of each tensor kept; NaN otherwise
  std::vector<double> drop;         // dare, dare-ties: drop probability; NaN otherwise
  std::int64_t seed = 0;            // dare, dare-ties: seed of the drop masks
  std::string base = "seed";        // the model the task vectors start from
  double seconds = 0;               // forming and scoring the merges
};

// The contents of one eval.h5. K = elms.size(), D = domains.size(), M = methods.size(),
// S = schemes.size(); matrices are row-major.
struct EvalResults {
  std::int64_t format_version = kEvalFormatVersion;  // as read; written: always the current one
  std::string config;                                // INI text of the run's configuration
  std::int64_t ranks = 0;                            // world size of the evaluation
  double score_seconds = 0, average_seconds = 0, combine_seconds = 0;
  double route_seconds = 0;  // the cluster routing's prefix embeddings and weights

  std::vector<std::string> elms;     // [K]
  std::vector<std::string> domains;  // [D] train domains, then held-out ones
  std::vector<double> in_domain;     // [D] 1 train domain, 0 held-out
  std::string posterior;             // eval.posterior: prefix | prev-token

  std::vector<std::string> methods;     // [M]
  std::vector<double> perplexity;       // [M x D], NaN where not evaluated
  std::vector<double> mean_in_domain;   // [M]
  std::vector<double> mean_out_domain;  // [M]
  std::vector<double> priors;           // [D x K] cached prior of each domain
  std::vector<std::string> schemes;     // [S] average weight schemes
  std::vector<double> average_weights;  // [S x D x K]
  std::vector<std::int64_t> tokens;     // [D] test tokens scored

  std::vector<std::string> checkpoints;        // [C] the checkpoints read (empty before format 3)
  std::vector<std::int64_t> checkpoint_steps;  // [C] their steps
  std::string btm_version, btm_commit;         // as read (written: this build's); "" before 3

  std::optional<EvalCompute> compute;  // absent in format version 1
  std::optional<EvalMerges> merges;    // absent without eval.merges
};

// Writes `results` atomically (h5::AtomicFile) in the current format version. Throws
// SystemError if the arrays do not have the shapes above (a bug of the caller).
void write_eval_file(const std::filesystem::path& path, const EvalResults& results);

// Reads and checks an eval file (format, version 1 to 3, every attribute and dataset, their
// shapes). InputError naming the file and what is wrong otherwise.
EvalResults read_eval_file(const std::filesystem::path& path);

}  // namespace btm

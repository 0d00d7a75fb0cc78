// combine.hpp: what world rank 0 forms from the gathered log-probabilities (score.hpp): the
// cached priors, the ELMs', ensembles', averages' and the dense model's perplexities and their
// means, as the results of eval.h5 (io/eval_file.hpp); and the compute table of the models the
// evaluation compared. No communication.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "btm/config/config.hpp"
#include "btm/eval/plan.hpp"
#include "btm/eval/score.hpp"
#include "btm/io/eval_file.hpp"
#include "btm/io/forest.hpp"
#include "btm/method/ensemble.hpp"

namespace btm {

// The cached prior's settings from the [eval] section (prior_batch, prior_blocks, prior_ema,
// posterior).
ensemble::CachedPriorOptions cached_prior_options(const Config& config);

// The cached prior of every evaluation domain over the ELMs, [D x K], from the ELMs' validation
// log-probabilities in `scores` (score_models on plan.sets).
std::vector<double> cached_priors(const Config& config, const EvalPlan& plan, const Scores& scores);

// The routing weights of every test position of every domain over the ELMs (plan.clusters,
// which must be set), [D][N x K]: the prefix embedding of each block updated token by token, the
// temperature eval.cluster_temperature, or the clustering's own when that is 0.
std::vector<std::vector<double>> cluster_routes(const Config& config, const EvalPlan& plan);

// The evaluation's results from the models' scores, the priors ([D x K]), the averages' scores
// (score_averages on `averages`) and the merges' (score_merges on `merges`): methods,
// perplexity, means, priors, average weights, tokens, /merges (with merges), and the root
// attributes elms, domains, in_domain, posterior. `routes` (empty: no cluster routing) holds
// per domain the routing weights of its test positions over the ELMs, [N x K]
// (method/cluster's route_blocks): rows ensemble:cluster-top-k. The caller adds config, ranks,
// the timings and /compute.
EvalResults combine(const Config& config, const EvalPlan& plan, const Scores& scores,
                    const std::vector<double>& priors, const AveragePlan& averages,
                    const std::vector<float>& average_scores, const MergePlan& merges,
                    const std::vector<float>& merge_scores,
                    const std::vector<std::vector<double>>& routes);

// The compute of every model the evaluation compared (forest.h5 and the metrics files), eval.h5's
// /compute: the seed (where the forest has one), the ELMs `elms`, the dense model with
// `with_dense`. What makes the forest-vs-dense comparison checkable from the file alone.
EvalCompute compute_table(const std::filesystem::path& run_dir, const Forest& forest,
                          const std::vector<std::string>& elms, bool with_dense);

}  // namespace btm

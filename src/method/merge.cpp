#include "btm/method/merge.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>
#include <stdexcept>

#include "btm/method/average.hpp"
#include "btm/method/ensemble.hpp"
#include "btm/util/error.hpp"
#include "btm/util/rng.hpp"

namespace btm {

MergeOptions merge_options(const EvalConfig& eval, MergeMethod method) {
  return {method, eval.merge_lambda, eval.merge_density, eval.merge_drop, eval.merge_seed};
}

bool merge_uses_density(MergeMethod method) {
  return method == MergeMethod::ties;
}
bool merge_uses_drop(MergeMethod method) {
  return method == MergeMethod::dare || method == MergeMethod::dare_ties;
}

std::string describe_merge(const MergeOptions& o) {
  std::ostringstream s;
  s << word_of(o.method);
  if (o.method == MergeMethod::average) return s.str();
  s << " (lambda " << o.lambda;
  if (merge_uses_density(o.method)) s << ", density " << o.density;
  if (merge_uses_drop(o.method)) s << ", drop " << o.drop << ", seed " << o.seed;
  s << ")";
  return s.str();
}

std::vector<std::size_t> tensor_ends(const ParamLayout& layout) {
  std::vector<std::size_t> ends;
  for (const TensorSpec& t : layout.tensors()) ends.push_back(t.offset + t.size);
  return ends;
}

void trim_to_density(std::span<float> x, double density) {
  const std::size_t n = x.size();
  if (density >= 1 || n == 0) return;
  // floor(density x n), forgiving the decimal rounding of density (0.29 x 100 is 28.999...).
  const std::size_t k =
      static_cast<std::size_t>(std::floor(density * static_cast<double>(n) + 1e-9));
  if (k >= n) return;
  if (k == 0) {
    std::fill(x.begin(), x.end(), 0.0f);
    return;
  }
  std::vector<float> magnitude(n);
  for (std::size_t i = 0; i < n; ++i) magnitude[i] = std::abs(x[i]);
  const auto kth = magnitude.begin() + static_cast<std::ptrdiff_t>(k - 1);
  std::nth_element(magnitude.begin(), kth, magnitude.end(), std::greater<float>());
  const float threshold = *kth;  // the k-th largest |x|
  std::size_t above = 0;
  for (std::size_t i = 0; i < n; ++i) above += std::abs(x[i]) > threshold;
  std::size_t equal_kept = k - above;  // entries at the threshold kept, lowest indices first
  for (std::size_t i = 0; i < n; ++i) {
    const float a = std::abs(x[i]);
    if (a > threshold) continue;
    if (a == threshold && equal_kept > 0) {
      --equal_kept;
      continue;
    }
    x[i] = 0.0f;
  }
}

void drop_and_rescale(std::span<float> x, double p, std::uint64_t seed, std::size_t parent,
                      std::size_t first) {
  if (p <= 0) return;
  // The parent's stream: draw i is Rng(base).next_u64() after i draws, mix64(base + i), so each
  // entry's draw is independent of the threads and of the part of the vector given.
  const std::uint64_t base = mix64(mix64(seed) + static_cast<std::uint64_t>(parent));
  const double scale = 1.0 / (1.0 - p);
  const std::size_t n = x.size();
#pragma omp parallel for schedule(static)
  for (std::size_t i = 0; i < n; ++i) {
    Rng draw(base + static_cast<std::uint64_t>(first + i));
    x[i] = draw.uniform() < p ? 0.0f : static_cast<float>(static_cast<double>(x[i]) * scale);
  }
}

TaskVectorMerge::TaskVectorMerge(const MergeOptions& options,
                                 const std::vector<std::vector<double>>& weights,
                                 std::vector<float> seed, std::vector<std::size_t> ends)
    : options_(options), seed_(std::move(seed)), ends_(std::move(ends)) {
  if (options.method == MergeMethod::average)
    throw std::invalid_argument("TaskVectorMerge: the average is average_checkpoints");
  if (ends_.empty() || ends_.back() != seed_.size() || !std::is_sorted(ends_.begin(), ends_.end()))
    throw std::invalid_argument("TaskVectorMerge: the tensor ends do not cover the vector");
  if (!std::isfinite(options.lambda))
    throw InputError("merge lambda " + std::to_string(options.lambda) + " is not a number");
  if (!(options.density > 0 && options.density <= 1))
    throw InputError("merge density " + std::to_string(options.density) +
                     " is outside (0, 1]: give the share of each tensor to keep");
  if (!(options.drop >= 0 && options.drop < 1))
    throw InputError("merge drop probability " + std::to_string(options.drop) +
                     " is outside [0, 1)");
  for (const std::vector<double>& w : weights) {
    ensemble::check_distribution(w, "the merge weights");
    if (!merges_.empty() && w.size() != merges_.front().weights.size())
      throw std::invalid_argument("TaskVectorMerge: weight vectors of different lengths");
    merges_.push_back({w, fixed::Sum::for_weights(seed_.size(), w), {}, {}});
  }
}

std::size_t TaskVectorMerge::bytes_per_merge(MergeMethod method) {
  const bool consensus = method == MergeMethod::ties || method == MergeMethod::dare_ties;
  // the sum (int64), the result (float); consensus: the weight sum (int64), the sign (int8)
  return consensus ? 8 + 4 + 8 + 1 : 8 + 4;
}

bool TaskVectorMerge::consensus() const {
  return options_.method == MergeMethod::ties || options_.method == MergeMethod::dare_ties;
}

int TaskVectorMerge::passes() const {
  return consensus() ? 2 : 1;
}

std::vector<float> TaskVectorMerge::task_vector(std::size_t j, std::span<const float> theta) const {
  if (theta.size() != seed_.size())
    throw std::invalid_argument("TaskVectorMerge: parent " + std::to_string(j) + " has " +
                                std::to_string(theta.size()) + " parameters, the seed " +
                                std::to_string(seed_.size()));
  std::vector<float> tau(theta.size());
  const std::size_t n = tau.size();
#pragma omp parallel for schedule(static)
  for (std::size_t i = 0; i < n; ++i) tau[i] = theta[i] - seed_[i];
  if (options_.method == MergeMethod::ties) {
    const std::size_t tensors = ends_.size();
#pragma omp parallel for schedule(dynamic)
    for (std::size_t t = 0; t < tensors; ++t) {
      const std::size_t begin = t == 0 ? 0 : ends_[t - 1];
      trim_to_density(std::span<float>(tau).subspan(begin, ends_[t] - begin), options_.density);
    }
  } else if (merge_uses_drop(options_.method)) {
    drop_and_rescale(tau, options_.drop, options_.seed, j);
  }
  return tau;
}

void TaskVectorMerge::elect_signs(Merge& m) {
  // The sign of sum_j w_j tau_j, + where it is 0 (mergekit's majority sign); then the sum is
  // reused for the agreeing entries.
  std::span<std::int64_t> acc = m.sum.raw();
  const std::size_t n = acc.size();
  m.sign.resize(n);
#pragma omp parallel for schedule(static)
  for (std::size_t i = 0; i < n; ++i) m.sign[i] = acc[i] >= 0 ? 1 : -1;
  std::fill(acc.begin(), acc.end(), 0);
  m.weight_sum.assign(acc.size(), 0);
}

void TaskVectorMerge::add(int pass, std::size_t j, std::span<const float> theta) {
  if (pass < pass_ || pass >= passes() || merges_.empty() || j >= merges_.front().weights.size())
    throw std::logic_error("TaskVectorMerge::add: pass " + std::to_string(pass) + " of parent " +
                           std::to_string(j) + " out of order");
  if (pass > pass_) {
    for (Merge& m : merges_) elect_signs(m);
    pass_ = pass;
  }
  if (std::none_of(merges_.begin(), merges_.end(),
                   [&](const Merge& m) { return m.weights[j] != 0; }))
    return;
  const std::vector<float> tau = task_vector(j, theta);
  for (Merge& m : merges_) {
    const double w = m.weights[j];
    if (w == 0) continue;
    if (pass == 0) {
      m.sum.add(tau, w);  // linear: the sum itself; consensus: the election (range checked here)
      continue;
    }
    std::span<std::int64_t> acc = m.sum.raw();
    const std::int64_t one = fixed::to_fixed(1.0f, w);
    const std::size_t n = tau.size();
#pragma omp parallel for schedule(static)
    for (std::size_t i = 0; i < n; ++i)
      if (tau[i] != 0 && (tau[i] > 0) == (m.sign[i] > 0)) {
        acc[i] += fixed::to_fixed(tau[i], w);
        m.weight_sum[i] += one;
      }
  }
}

std::vector<float> TaskVectorMerge::result(std::size_t u) const {
  if (pass_ + 1 != passes())
    throw std::logic_error("TaskVectorMerge::result: the parents were not added in every pass");
  const Merge& m = merges_.at(u);
  if (m.sum.bad() > 0)
    throw InputError(
        "merge: a weighted task-vector entry is outside the fixed-point range "
        "(|w tau| > 2^23): not a trained model");
  const std::span<const std::int64_t> acc = m.sum.raw();
  const std::size_t n = seed_.size();
  std::vector<float> out(n);
  const double lambda = options_.lambda;
  if (!consensus()) {
    const double factor = fixed::factor_for(1.0);
#pragma omp parallel for schedule(static)
    for (std::size_t i = 0; i < n; ++i)
      out[i] = static_cast<float>(static_cast<double>(seed_[i]) +
                                  lambda * static_cast<double>(acc[i]) * factor);
    return out;
  }
  // The disjoint mean: the agreeing entries' weighted sum over their weights (both in units of
  // 2^-40, which cancel); the seed where no parent agrees.
#pragma omp parallel for schedule(static)
  for (std::size_t i = 0; i < n; ++i)
    out[i] = m.weight_sum[i] == 0 ? seed_[i]
                                  : static_cast<float>(static_cast<double>(seed_[i]) +
                                                       lambda * static_cast<double>(acc[i]) /
                                                           static_cast<double>(m.weight_sum[i]));
  return out;
}

std::filesystem::path shared_seed(const Forest& forest, const std::filesystem::path& run_dir,
                                  const std::vector<std::string>& parents) {
  const std::filesystem::path seed = checkpoint_file(run_dir, "seed");
  if (!forest.find("seed") || !std::filesystem::exists(seed))
    throw InputError(run_dir.string() +
                     " has no seed checkpoint (elms/seed.h5): merges of task vectors need the "
                     "seed the ELMs were branched from (use --method average)");
  for (const std::string& p : parents) {
    const ModelRecord* r = forest.find(p);
    if (r && r->parents.empty())
      throw InputError("'" + p +
                       "' was not branched from the seed (run.elm_init = random?): it has no "
                       "task vector; merge ELMs of a shared seed, or use --method average");
  }
  return seed;
}

MergeParents::MergeParents(std::vector<std::filesystem::path> files, const ModelConfig& model,
                           bool hold)
    : files_(std::move(files)), model_(model), hold_(hold), held_(hold ? files_.size() : 0) {}

std::span<const float> MergeParents::get(std::size_t j) {
  if (!hold_) {
    last_ = load_state_vector(files_.at(j), "params", model_);
    return last_;
  }
  if (held_.at(j).empty()) held_[j] = load_state_vector(files_[j], "params", model_);
  return held_[j];
}

std::vector<float> merge_seed(const std::filesystem::path& seed, const ModelConfig& model) {
  if (!(peek_checkpoint(seed).model == model))
    throw InputError(seed.string() +
                     ": the seed's model shape differs from its ELMs': task vectors need the "
                     "seed the ELMs were branched from");
  return load_state_vector(seed, "params", model);
}

std::vector<std::vector<float>> merge_params(MergeParents& parents,
                                             const std::vector<std::vector<double>>& weights,
                                             std::vector<float> seed, const ModelConfig& model,
                                             const MergeOptions& options) {
  for (const std::vector<double>& w : weights)
    if (w.size() != parents.size())
      throw InputError("merge: " + std::to_string(w.size()) + " weights for " +
                       std::to_string(parents.size()) + " parents: give one weight per parent");
  const ParamLayout layout(model);
  TaskVectorMerge merge(options, weights, std::move(seed), tensor_ends(layout));
  for (int pass = 0; pass < merge.passes(); ++pass)
    for (std::size_t j = 0; j < parents.size(); ++j)
      if (std::any_of(weights.begin(), weights.end(), [&](const auto& w) { return w[j] != 0; }))
        merge.add(pass, j, parents.get(j));
  std::vector<std::vector<float>> out;
  for (std::size_t u = 0; u < weights.size(); ++u) out.push_back(merge.result(u));
  return out;
}

Checkpoint merge_checkpoints(const std::vector<std::filesystem::path>& parents,
                             std::span<const double> weights, const std::filesystem::path& seed,
                             const ModelConfig& model, const MergeOptions& options) {
  if (options.method == MergeMethod::average)
    return average_checkpoints(parents, weights, model, false);
  Checkpoint out = averaged_attributes(parents, weights, model);
  MergeParents streamed(parents, model, false);
  out.params =
      std::move(merge_params(streamed, {std::vector<double>(weights.begin(), weights.end())},
                             merge_seed(seed, model), model, options)
                    .front());
  out.adam_m.assign(out.params.size(), 0.0f);
  out.adam_v.assign(out.params.size(), 0.0f);
  return out;
}

}  // namespace btm

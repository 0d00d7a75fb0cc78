// merge.hpp: merges of ELMs beyond the weighted average, over the task vectors
// tau_j = theta_j - theta_seed relative to the forest's shared seed (method words: config.hpp
// MergeMethod):
//   task-arithmetic  theta_seed + lambda sum_j w_j tau_j (Ilharco et al. 2023)
//   ties             trim every tau_j to its largest-|tau| entries (eval.merge_density of each
//                    tensor), elect a sign per parameter (the sign of sum_j w_j trim(tau_j), + on
//                    a tie), and take the weighted mean of the entries that agree with it (the
//                    disjoint mean: divided by the sum of their weights); then theta_seed +
//                    lambda x that (Yadav et al. 2023, as mergekit's ties: the weights enter
//                    before the sign election)
//   dare             drop every entry of tau_j with probability p, keep the others x 1/(1-p)
//                    (Yu et al. 2024), then task arithmetic
//   dare-ties        DARE's drop and rescale instead of TIES's trim, then TIES's sign election
//                    and disjoint mean (mergekit's dare_ties)
// Trimming is per tensor (ParamLayout), as mergekit does: tensors differ in scale by orders of
// magnitude (LayerNorm gains near 1 move little; embeddings and MLP weights move a lot), and one
// threshold over the whole model would trim some tensors to nothing. It keeps exactly
// floor(density x size) entries of each tensor (std::nth_element; ties at the threshold go to
// the lower index). DARE's drop of entry i of parent j is the i-th draw of an Rng seeded from
// (seed, j), so a merge is the same on every machine, thread count and rank (j is the parent's
// position: the manifest's order of the trained ELMs in eval and in btm average's default).
// The sums over parents are fixed-point sums (fixed_point.hpp): the same bits in any order.
// Parents stream from their checkpoints one at a time (TIES and DARE-TIES read each twice: the
// sign election needs every parent before the mean), so K models are never in memory together.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "btm/config/config.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/forest.hpp"
#include "btm/model/params.hpp"
#include "btm/util/fixed_point.hpp"

namespace btm {

struct MergeOptions {
  MergeMethod method = MergeMethod::task_arithmetic;
  double lambda = 1.0;     // scale of the merged task vector
  double density = 0.2;    // ties: share of each tensor's task-vector entries kept
  double drop = 0.9;       // dare, dare-ties: probability of dropping an entry
  std::uint64_t seed = 1;  // dare, dare-ties: seed of the drop masks
};

// The options of `method` from the eval.merge_* settings.
MergeOptions merge_options(const EvalConfig& eval, MergeMethod method);
// "ties(density=0.2, lambda=1)": the method and the parameters it uses, for messages.
std::string describe_merge(const MergeOptions& options);
// Whether the method uses the density (ties), the drop and the seed (dare, dare-ties).
bool merge_uses_density(MergeMethod method);
bool merge_uses_drop(MergeMethod method);

// The ends of the tensors of `layout` in the flat vector: the segments TIES trims one by one.
std::vector<std::size_t> tensor_ends(const ParamLayout& layout);

// TIES's trim of one tensor: keeps the floor(density x size) entries of largest |x| (ties at the
// threshold: the lower indices) and zeroes the others. density >= 1 keeps everything.
void trim_to_density(std::span<float> x, double density);
// DARE's drop of parent j's task vector: entry i is zeroed with probability p (the i-th draw of
// the parent's stream), the others are multiplied by 1/(1-p). `first` is the index of x[0] in
// the flat vector (so a part of a vector is dropped as in the whole).
void drop_and_rescale(std::span<float> x, double p, std::uint64_t seed, std::size_t parent,
                      std::size_t first = 0);

// Merges formed from their parents streamed one at a time, one merge per weight vector: for pass
// in 0..passes()-1, add(pass, j, theta_j) for every parent j (parents no merge weighs are
// skipped); then result(u). Every parent is sparsified once per pass for all the merges (its
// trim or drop does not depend on the weights), so U merges cost one read of the parents, and
// U accumulators (bytes_per_merge each). `ends` are the tensor ends (tensor_ends); each weight
// vector has one weight per parent and is a distribution (ensemble::check_distribution).
class TaskVectorMerge {
 public:
  TaskVectorMerge(const MergeOptions& options, const std::vector<std::vector<double>>& weights,
                  std::vector<float> seed, std::vector<std::size_t> ends);
  int passes() const;
  // Host memory of one merge's accumulators and result, per parameter.
  static std::size_t bytes_per_merge(MergeMethod method);
  void add(int pass, std::size_t j, std::span<const float> theta);
  // theta_seed + lambda x the merged task vector of weight vector u. InputError where a weighted
  // task-vector entry was outside the fixed-point range (|w tau| > 2^23 / terms: not a trained
  // model).
  std::vector<float> result(std::size_t u = 0) const;

 private:
  struct Merge {
    std::vector<double> weights;
    fixed::Sum sum;  // linear: sum_j w_j tau_j; consensus: pass 0 the election, pass 1 the sum
                     // of the agreeing entries
    std::vector<std::int64_t> weight_sum;  // consensus: the agreeing entries' weights
    std::vector<std::int8_t> sign;         // consensus: the elected sign (+1 / -1)
  };
  bool consensus() const;
  // tau_j = theta_j - theta_seed, trimmed or dropped as the method says.
  std::vector<float> task_vector(std::size_t j, std::span<const float> theta) const;
  void elect_signs(Merge& m);

  MergeOptions options_;
  std::vector<float> seed_;
  std::vector<std::size_t> ends_;
  std::vector<Merge> merges_;
  int pass_ = 0;
};

// The checkpoint of the seed the ELMs `parents` of the forest were branched from
// (RUN/elms/seed.h5), the base of their task vectors. InputError where the forest has no seed or a
// parent does not descend from it (run.elm_init = random: there are no task vectors to merge).
std::filesystem::path shared_seed(const Forest& forest, const std::filesystem::path& run_dir,
                                  const std::vector<std::string>& parents);

// The parameters of a merge's parents, the checkpoints `files` of the shape `model`: read from
// the file each time they are asked for (the merges stream them, one in memory at a time), or,
// with `hold`, read once and kept (several batches of merges then read each file once).
class MergeParents {
 public:
  MergeParents(std::vector<std::filesystem::path> files, const ModelConfig& model, bool hold);
  std::size_t size() const { return files_.size(); }
  // Parent j's params; valid until the next call. InputError naming the file for a bad one.
  std::span<const float> get(std::size_t j);

 private:
  std::vector<std::filesystem::path> files_;
  ModelConfig model_;
  bool hold_;
  std::vector<std::vector<float>> held_;
  std::vector<float> last_;
};

// The merges of `parents` with each weight vector of `weights` (one weight per parent, a
// distribution) relative to the seed's params `seed`: their params.
std::vector<std::vector<float>> merge_params(MergeParents& parents,
                                             const std::vector<std::vector<double>>& weights,
                                             std::vector<float> seed, const ModelConfig& model,
                                             const MergeOptions& options);

// The seed's params for merge_params: InputError where the checkpoint `seed` is not of the
// ELMs' shape `model`.
std::vector<float> merge_seed(const std::filesystem::path& seed, const ModelConfig& model);

// One merge as a checkpoint: params (zero moments) and the average's attributes
// (averaged_attributes). MergeMethod::average is average_checkpoints.
Checkpoint merge_checkpoints(const std::vector<std::filesystem::path>& parents,
                             std::span<const double> weights, const std::filesystem::path& seed,
                             const ModelConfig& model, const MergeOptions& options);

}  // namespace btm

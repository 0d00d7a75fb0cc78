// forest.hpp: the ELMforest on disk.
//   RUN/forest.h5          manifest: every model (seed, ELMs, dense baseline, averages), its kind,
//                          domains, parents and branch weights, status, steps, global batch,
//                          tokens, FLOPs, checkpoint, and state_from: the checkpoint whose state
//                          a branch not trained yet starts from (it holds no copy: checkpoint.hpp);
//                          /timing: the wall time of each phase of the last `btm run` and the
//                          time its ranks spent in training steps (attributes phases, wall_s,
//                          train_s)
//                          domains_are: "labels" (folders of the input) or "clusters" (c-BTM:
//                          the clusters of `btm cluster`, attribute clusters: its clusters.h5)
//   RUN/elms/NAME.h5       one checkpoint per model (checkpoint.hpp)
//   RUN/metrics/NAME.h5    per-step training metrics (metrics.hpp)
//   RUN/eval.h5            evaluation (io/eval_file.hpp)
// The manifest is written only by world rank 0 between phases, atomically.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "btm/util/enum_words.hpp"

namespace btm {

constexpr int kForestFormatVersion = 2;  // 1 is read too (no global batch, FLOPs)

enum class ModelKind { seed, elm, dense, average };
enum class ModelStatus { branched, trained };

template <>
struct EnumWords<ModelKind> {
  static constexpr std::array<std::pair<ModelKind, std::string_view>, 4> words{
      {{ModelKind::seed, "seed"},
       {ModelKind::elm, "elm"},
       {ModelKind::dense, "dense"},
       {ModelKind::average, "average"}}};
};
template <>
struct EnumWords<ModelStatus> {
  static constexpr std::array<std::pair<ModelStatus, std::string_view>, 2> words{
      {{ModelStatus::branched, "branched"}, {ModelStatus::trained, "trained"}}};
};

struct ModelRecord {
  std::string name;
  ModelKind kind = ModelKind::elm;
  std::vector<std::string> domains;    // what it trains on
  std::vector<std::string> parents;    // what it was branched from
  std::vector<double> parent_weights;  // weights of the parents (sum to 1)
  ModelStatus status = ModelStatus::branched;
  std::int64_t steps = 0;         // optimizer steps done (schedule position)
  std::int64_t global_batch = 0;  // sequences per optimizer step of its current phase
  std::int64_t tokens = 0;        // tokens trained on over its lineage
  double flops = 0;               // training FLOPs over its lineage (budget.hpp)
  std::string checkpoint;         // path relative to the run directory
  std::string
      state_from;  // a branch not trained yet: the checkpoint (beside its own) holding its state
};

// One phase of a `btm run`: its wall time and the mean over ranks of the time spent in
// training steps (forward, backward, optimizer) during it.
struct PhaseTime {
  std::string phase;
  double wall_s = 0;
  double train_s = 0;
};

struct Forest {
  std::string config_ini;
  std::string clusters;  // data.clusters the forest was started with; empty: labelled domains
  std::vector<ModelRecord> models;
  std::vector<PhaseTime> timing;  // of the last `btm run` that finished; empty: none

  const ModelRecord* find(const std::string& name) const;
  ModelRecord* find(const std::string& name);
  // Adds or replaces the record with the same name.
  void upsert(const ModelRecord& record);
  bool remove(const std::string& name);
  // The ELMs (kind elm) in manifest order.
  std::vector<const ModelRecord*> elms() const;
  // The names of the ELMs whose training is finished, in manifest order.
  std::vector<std::string> trained_elm_names() const;
};

std::filesystem::path forest_file(const std::filesystem::path& run_dir);
std::filesystem::path checkpoint_file(const std::filesystem::path& run_dir,
                                      const std::string& name);
std::filesystem::path metrics_file(const std::filesystem::path& run_dir, const std::string& name);
std::filesystem::path eval_file(const std::filesystem::path& run_dir);

// An empty forest when RUN/forest.h5 does not exist; InputError naming the file when it is
// not a valid manifest.
Forest load_forest(const std::filesystem::path& run_dir);
void save_forest(const std::filesystem::path& run_dir, const Forest& forest);

}  // namespace btm

// metrics.hpp: the training metrics of one model, RUN/metrics/NAME.h5. Every dataset carries a
// "units" attribute (h5py: f["loss"].attrs["units"]).
//   one row per progress line (run.log_every):
//     /step (steps) /tokens (tokens: over the model's lineage) int64
//     /loss (nats/token: the mean over the step's micro-batches) /lr (1) /grad_norm (1)
//     /tokens_per_s (tokens/s) /step_ms (ms) /mfu (1: NaN where the device's peak is unknown)
//     /elapsed_s (s) float64, /memory_bytes (bytes) int64 (format 2)
//   /valid, the validation table (format 2; run.eval_every, run.eval_blocks), one row per
//   validation, D domains:
//     /valid/step (steps) /valid/tokens (tokens) int64 [n]
//     /valid/loss (nats/token) /valid/perplexity (1: exp of the loss) float64 [n, D]
//     /valid/tokens_scored (tokens) int64 [D]: the validation tokens of each domain
//     attribute domains (D names)
//   attributes format = "btm-metrics", format_version, name, config
// The whole file is rewritten atomically on every flush, so it is always complete and readable,
// also after a preemption or a crash; on resume, rows after the checkpoint's step are dropped.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace btm {

constexpr int kMetricsFormatVersion = 2;  // 1 is read too (no /valid, step_ms, mfu, memory)

struct MetricsRow {
  std::int64_t step = 0;
  std::int64_t tokens = 0;
  double loss = 0, lr = 0, grad_norm = 0, tokens_per_s = 0, elapsed_s = 0;
  double step_ms = 0, mfu = 0;
  std::int64_t memory_bytes = 0;
};

// One validation: the mean loss per token on each of the log's validation domains.
struct ValidationRow {
  std::int64_t step = 0;
  std::int64_t tokens = 0;
  std::vector<double> loss;  // [domain], nats per token
};

class MetricsLog {
 public:
  MetricsLog(std::filesystem::path file, std::string name, std::string config_ini);
  // Loads an existing file, keeping rows with step <= keep_through_step.
  void resume(std::int64_t keep_through_step);
  void append(const MetricsRow& row) { rows_.push_back(row); }
  // What every validation row scores: the domains and their validation tokens. Rows kept by
  // resume that name other domains are dropped.
  void set_validation_domains(std::vector<std::string> domains,
                              std::vector<std::int64_t> tokens_scored);
  // std::invalid_argument unless row.loss has one value per validation domain.
  void append_validation(const ValidationRow& row);
  void flush() const;
  const std::vector<MetricsRow>& rows() const { return rows_; }
  const std::vector<ValidationRow>& validation() const { return validation_; }
  const std::vector<std::string>& validation_domains() const { return domains_; }
  const std::vector<std::int64_t>& validation_tokens() const { return tokens_scored_; }
  static std::vector<MetricsRow> read(const std::filesystem::path& file);
  // The whole file (InputError naming it when it is not a readable btm metrics file).
  static MetricsLog load(const std::filesystem::path& file);

 private:
  std::filesystem::path file_;
  std::string name_, config_ini_;
  std::vector<MetricsRow> rows_;
  std::vector<std::string> domains_;
  std::vector<std::int64_t> tokens_scored_;
  std::vector<ValidationRow> validation_;
};

}  // namespace btm

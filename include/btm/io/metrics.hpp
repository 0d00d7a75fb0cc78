// metrics.hpp: the per-step training metrics of one model, RUN/metrics/NAME.h5:
//   datasets /step /tokens (int64) /loss /lr /grad_norm /tokens_per_s /elapsed_s (float64)
//   attributes format = "btm-metrics", format_version, name, config
// The whole file is rewritten atomically on every flush, so it is always complete and readable,
// also after a preemption or a crash; on resume, rows after the checkpoint's step are dropped.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace btm {

struct MetricsRow {
  std::int64_t step = 0;
  std::int64_t tokens = 0;
  double loss = 0, lr = 0, grad_norm = 0, tokens_per_s = 0, elapsed_s = 0;
};

class MetricsLog {
 public:
  MetricsLog(std::filesystem::path file, std::string name, std::string config_ini);
  // Loads an existing file, keeping rows with step <= keep_through_step.
  void resume(std::int64_t keep_through_step);
  void append(const MetricsRow& row) { rows_.push_back(row); }
  void flush() const;
  const std::vector<MetricsRow>& rows() const { return rows_; }
  static std::vector<MetricsRow> read(const std::filesystem::path& file);

 private:
  std::filesystem::path file_;
  std::string name_, config_ini_;
  std::vector<MetricsRow> rows_;
};

}  // namespace btm

#include "btm/io/metrics.hpp"

#include "btm/io/h5.hpp"
#include "btm/util/error.hpp"

namespace btm {

namespace fs = std::filesystem;

MetricsLog::MetricsLog(fs::path file, std::string name, std::string config_ini)
    : file_(std::move(file)), name_(std::move(name)), config_ini_(std::move(config_ini)) {}

std::vector<MetricsRow> MetricsLog::read(const fs::path& file) {
  try {
    h5::Handle f = h5::open_file(file, false);
    if (!h5::has_attr(f, "format") || h5::get_string(f, "format") != "btm-metrics")
      throw InputError("not a btm metrics file");
    const auto step = h5::read_array<std::int64_t>(f, "step");
    const auto tokens = h5::read_array<std::int64_t>(f, "tokens");
    const auto loss = h5::read_array<double>(f, "loss");
    const auto lr = h5::read_array<double>(f, "lr");
    const auto norm = h5::read_array<double>(f, "grad_norm");
    const auto tps = h5::read_array<double>(f, "tokens_per_s");
    const auto elapsed = h5::read_array<double>(f, "elapsed_s");
    const std::size_t n = step.size();
    if (tokens.size() != n || loss.size() != n || lr.size() != n || norm.size() != n ||
        tps.size() != n || elapsed.size() != n)
      throw InputError("metrics datasets have different lengths");
    std::vector<MetricsRow> rows(n);
    for (std::size_t i = 0; i < n; ++i)
      rows[i] = {step[i], tokens[i], loss[i], lr[i], norm[i], tps[i], elapsed[i]};
    return rows;
  } catch (const InputError& e) {
    const std::string what = e.what();
    if (what.starts_with(file.string())) throw;
    throw InputError(file.string() + ": " + what);
  }
}

void MetricsLog::resume(std::int64_t keep_through_step) {
  rows_.clear();
  if (!fs::exists(file_)) return;
  for (const MetricsRow& row : read(file_))
    if (row.step <= keep_through_step) rows_.push_back(row);
}

void MetricsLog::flush() const {
  h5::AtomicFile out(file_);
  hid_t root = out.root();
  h5::set_attr(root, "format", std::string("btm-metrics"));
  h5::set_attr(root, "format_version", std::int64_t{1});
  h5::set_attr(root, "name", name_);
  h5::set_attr(root, "config", config_ini_);
  const std::size_t n = rows_.size();
  std::vector<std::int64_t> step(n), tokens(n);
  std::vector<double> loss(n), lr(n), norm(n), tps(n), elapsed(n);
  for (std::size_t i = 0; i < n; ++i) {
    step[i] = rows_[i].step;
    tokens[i] = rows_[i].tokens;
    loss[i] = rows_[i].loss;
    lr[i] = rows_[i].lr;
    norm[i] = rows_[i].grad_norm;
    tps[i] = rows_[i].tokens_per_s;
    elapsed[i] = rows_[i].elapsed_s;
  }
  h5::write_array(root, "step", step.data(), n);
  h5::write_array(root, "tokens", tokens.data(), n);
  h5::write_array(root, "loss", loss.data(), n);
  h5::write_array(root, "lr", lr.data(), n);
  h5::write_array(root, "grad_norm", norm.data(), n);
  h5::write_array(root, "tokens_per_s", tps.data(), n);
  h5::write_array(root, "elapsed_s", elapsed.data(), n);
  out.commit();
}

}  // namespace btm

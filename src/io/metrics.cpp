#include "btm/io/metrics.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>

#include "btm/io/h5.hpp"
#include "btm/util/error.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A dataset of format 2 that format 1 files lack: `fill` where it is absent.
template <typename T>
std::vector<T> read_optional(hid_t f, const std::string& name, std::size_t n, T fill) {
  if (!h5::exists(f, name)) return std::vector<T>(n, fill);
  std::vector<T> v = h5::read_array<T>(f, name);
  if (v.size() != n) throw InputError("metrics dataset /" + name + " has the wrong length");
  return v;
}

template <typename T>
void write_with_units(hid_t parent, const std::string& name, const std::vector<T>& v,
                      const std::string& units) {
  h5::write_array(parent, name, v.data(), v.size());
  h5::set_units(parent, name, units);
}

}  // namespace

MetricsLog::MetricsLog(fs::path file, std::string name, std::string config_ini)
    : file_(std::move(file)), name_(std::move(name)), config_ini_(std::move(config_ini)) {}

MetricsLog MetricsLog::load(const fs::path& file) {
  MetricsLog log(file, "", "");
  try {
    h5::Handle f = h5::open_file(file, false);
    if (!h5::has_attr(f, "format") || h5::get_string(f, "format") != "btm-metrics")
      throw InputError("not a btm metrics file");
    if (h5::has_attr(f, "name")) log.name_ = h5::get_string(f, "name");
    if (h5::has_attr(f, "config")) log.config_ini_ = h5::get_string(f, "config");
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
    const auto step_ms = read_optional<double>(f, "step_ms", n, kNaN);
    const auto mfu = read_optional<double>(f, "mfu", n, kNaN);
    const auto memory = read_optional<std::int64_t>(f, "memory_bytes", n, 0);
    log.rows_.resize(n);
    for (std::size_t i = 0; i < n; ++i)
      log.rows_[i] = {step[i], tokens[i],  loss[i],    lr[i],  norm[i],
                      tps[i],  elapsed[i], step_ms[i], mfu[i], memory[i]};
    if (h5::exists(f, "valid")) {
      h5::Handle g = h5::open_group(f, "valid");
      log.domains_ = h5::get_strings(g, "domains");
      log.tokens_scored_ = h5::read_array<std::int64_t>(g, "tokens_scored");
      const auto vstep = h5::read_array<std::int64_t>(g, "step");
      const auto vtokens = h5::read_array<std::int64_t>(g, "tokens");
      const auto vloss = h5::read_array<double>(g, "loss");
      const std::size_t D = log.domains_.size(), rows = vstep.size();
      if (log.tokens_scored_.size() != D || vtokens.size() != rows || vloss.size() != rows * D)
        throw InputError("the validation datasets (/valid) do not fit its " + std::to_string(D) +
                         " domains and " + std::to_string(rows) + " rows");
      for (std::size_t i = 0; i < rows; ++i)
        log.validation_.push_back(
            {vstep[i], vtokens[i],
             std::vector<double>(vloss.begin() + static_cast<std::ptrdiff_t>(i * D),
                                 vloss.begin() + static_cast<std::ptrdiff_t>((i + 1) * D))});
    }
    return log;
  } catch (const InputError& e) {
    const std::string what = e.what();
    if (what.starts_with(file.string())) throw;
    throw InputError(file.string() + ": " + what);
  }
}

std::vector<MetricsRow> MetricsLog::read(const fs::path& file) {
  return load(file).rows_;
}

void MetricsLog::resume(std::int64_t keep_through_step) {
  rows_.clear();
  validation_.clear();
  if (!fs::exists(file_)) return;
  const MetricsLog stored = load(file_);
  for (const MetricsRow& row : stored.rows_)
    if (row.step <= keep_through_step) rows_.push_back(row);
  if (stored.domains_ == domains_ || domains_.empty()) {
    if (domains_.empty()) {
      domains_ = stored.domains_;
      tokens_scored_ = stored.tokens_scored_;
    }
    for (const ValidationRow& row : stored.validation_)
      if (row.step <= keep_through_step) validation_.push_back(row);
  }
}

void MetricsLog::set_validation_domains(std::vector<std::string> domains,
                                        std::vector<std::int64_t> tokens_scored) {
  if (domains != domains_) validation_.clear();
  domains_ = std::move(domains);
  tokens_scored_ = std::move(tokens_scored);
}

void MetricsLog::append_validation(const ValidationRow& row) {
  if (row.loss.size() != domains_.size())
    throw std::invalid_argument("a validation row of " + std::to_string(row.loss.size()) +
                                " values for " + std::to_string(domains_.size()) + " domains");
  validation_.push_back(row);
}

void MetricsLog::flush() const {
  h5::AtomicFile out(file_);
  hid_t root = out.root();
  h5::set_attr(root, "format", std::string("btm-metrics"));
  h5::set_attr(root, "format_version", std::int64_t{kMetricsFormatVersion});
  h5::set_attr(root, "name", name_);
  h5::set_attr(root, "config", config_ini_);
  const std::size_t n = rows_.size();
  std::vector<std::int64_t> step(n), tokens(n), memory(n);
  std::vector<double> loss(n), lr(n), norm(n), tps(n), elapsed(n), step_ms(n), mfu(n);
  for (std::size_t i = 0; i < n; ++i) {
    const MetricsRow& r = rows_[i];
    step[i] = r.step;
    tokens[i] = r.tokens;
    loss[i] = r.loss;
    lr[i] = r.lr;
    norm[i] = r.grad_norm;
    tps[i] = r.tokens_per_s;
    elapsed[i] = r.elapsed_s;
    step_ms[i] = r.step_ms;
    mfu[i] = r.mfu;
    memory[i] = r.memory_bytes;
  }
  write_with_units(root, "step", step, "steps");
  write_with_units(root, "tokens", tokens, "tokens");
  write_with_units(root, "loss", loss, "nats/token");
  write_with_units(root, "lr", lr, "1");
  write_with_units(root, "grad_norm", norm, "1");
  write_with_units(root, "tokens_per_s", tps, "tokens/s");
  write_with_units(root, "step_ms", step_ms, "ms");
  write_with_units(root, "mfu", mfu, "1");
  write_with_units(root, "memory_bytes", memory, "bytes");
  write_with_units(root, "elapsed_s", elapsed, "s");
  if (!domains_.empty()) {
    h5::Handle g = h5::create_group(root, "valid");
    h5::set_attr(g, "domains", domains_);
    const std::size_t rows = validation_.size(), D = domains_.size();
    std::vector<std::int64_t> vstep(rows), vtokens(rows);
    std::vector<double> vloss(rows * D), vppl(rows * D);
    for (std::size_t i = 0; i < rows; ++i) {
      vstep[i] = validation_[i].step;
      vtokens[i] = validation_[i].tokens;
      for (std::size_t d = 0; d < D; ++d) {
        vloss[i * D + d] = validation_[i].loss[d];
        vppl[i * D + d] = std::exp(validation_[i].loss[d]);
      }
    }
    write_with_units(g, "step", vstep, "steps");
    write_with_units(g, "tokens", vtokens, "tokens");
    h5::write_matrix(g.get(), "loss", vloss.data(), rows, D);
    h5::set_units(g, "loss", "nats/token");
    h5::write_matrix(g.get(), "perplexity", vppl.data(), rows, D);
    h5::set_units(g, "perplexity", "1");
    write_with_units(g, "tokens_scored", tokens_scored_, "tokens");
  }
  out.commit();
}

}  // namespace btm

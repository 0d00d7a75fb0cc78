#include "btm/io/eval_file.hpp"

#include <cmath>
#include <ctime>

#include "btm/io/h5.hpp"
#include "btm/util/build_info.hpp"
#include "btm/util/error.hpp"
#include "btm/util/format.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

std::string shape_text(const std::vector<std::size_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

// What is wrong with the shapes of `r` (empty when nothing is).
std::string shape_problem(const EvalResults& r) {
  const std::size_t K = r.elms.size(), D = r.domains.size(), M = r.methods.size(),
                    S = r.schemes.size();
  const auto wrong = [](const char* name, std::size_t size, std::size_t want) {
    return name + std::string(" has ") + std::to_string(size) + " entries, expected " +
           std::to_string(want);
  };
  if (r.in_domain.size() != D) return wrong("in_domain", r.in_domain.size(), D);
  if (r.perplexity.size() != M * D) return wrong("perplexity", r.perplexity.size(), M * D);
  if (r.mean_in_domain.size() != M) return wrong("mean_in_domain", r.mean_in_domain.size(), M);
  if (r.mean_out_domain.size() != M) return wrong("mean_out_domain", r.mean_out_domain.size(), M);
  if (r.priors.size() != D * K) return wrong("priors", r.priors.size(), D * K);
  if (r.average_weights.size() != S * D * K)
    return wrong("average_weights", r.average_weights.size(), S * D * K);
  if (r.tokens.size() != D) return wrong("tokens", r.tokens.size(), D);
  if (r.checkpoint_steps.size() != r.checkpoints.size())
    return wrong("checkpoint_steps", r.checkpoint_steps.size(), r.checkpoints.size());
  if (r.merges) {
    const EvalMerges& m = *r.merges;
    const std::size_t n = m.rows.size();
    if (m.method.size() != n) return wrong("merges method", m.method.size(), n);
    if (m.scheme.size() != n) return wrong("merges scheme", m.scheme.size(), n);
    if (m.lambda.size() != n) return wrong("merges lambda", m.lambda.size(), n);
    if (m.density.size() != n) return wrong("merges density", m.density.size(), n);
    if (m.drop.size() != n) return wrong("merges drop", m.drop.size(), n);
  }
  if (r.compute) {
    const EvalCompute& c = *r.compute;
    const std::size_t n = c.models.size();
    if (c.continues.size() != n) return wrong("compute continues", c.continues.size(), n);
    if (c.steps.size() != n) return wrong("compute/steps", c.steps.size(), n);
    if (c.global_batch.size() != n) return wrong("compute/global_batch", c.global_batch.size(), n);
    if (c.tokens.size() != n) return wrong("compute/tokens", c.tokens.size(), n);
    if (c.flops.size() != n) return wrong("compute/flops", c.flops.size(), n);
    if (c.train_seconds.size() != n)
      return wrong("compute/train_seconds", c.train_seconds.size(), n);
  }
  return {};
}

// A float64 dataset of any rank (the 3-D /average_weights: h5.hpp writes 1-D and 2-D ones).
void write_doubles(hid_t parent, const std::string& name, const std::vector<double>& data,
                   const std::vector<hsize_t>& dims) {
  h5::Handle space(BTM_H5(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)));
  h5::Handle set(BTM_H5(H5Dcreate2(parent, name.c_str(), H5T_NATIVE_DOUBLE, space, H5P_DEFAULT,
                                   H5P_DEFAULT, H5P_DEFAULT)));
  if (!data.empty())
    BTM_H5(H5Dwrite(set, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()));
}

h5::Handle open_dataset(hid_t parent, const std::string& name) {
  if (!h5::exists(parent, name)) throw InputError("dataset /" + name + " is missing");
  return h5::Handle(BTM_H5(H5Dopen2(parent, name.c_str(), H5P_DEFAULT)));
}

// The dataset `name` of `parent` (shown as /`what`), which must have the shape `dims`.
template <typename T>
std::vector<T> read_checked(hid_t parent, const std::string& name, const std::string& what,
                            const std::vector<std::size_t>& dims) {
  if (!h5::exists(parent, name)) throw InputError("dataset /" + what + " is missing");
  const std::vector<std::size_t> got = h5::shape(parent, name);
  if (got != dims)
    throw InputError("/" + what + " is " + shape_text(got) + ", expected " + shape_text(dims));
  return h5::read_array<T>(parent, name);
}

EvalCompute read_compute(hid_t root) {
  if (!h5::exists(root, "compute"))
    throw InputError("group /compute is missing (format version 2 has it)");
  h5::Handle g = h5::open_group(root, "compute");
  EvalCompute c;
  c.models = h5::get_strings(g, "models");
  c.continues = h5::get_strings(g, "continues");
  const std::vector<std::size_t> n{c.models.size()};
  if (c.continues.size() != c.models.size())
    throw InputError("/compute lists " + std::to_string(c.models.size()) + " models but " +
                     std::to_string(c.continues.size()) + " 'continues' entries");
  c.steps = read_checked<std::int64_t>(g, "steps", "compute/steps", n);
  c.global_batch = read_checked<std::int64_t>(g, "global_batch", "compute/global_batch", n);
  c.tokens = read_checked<std::int64_t>(g, "tokens", "compute/tokens", n);
  c.flops = read_checked<double>(g, "flops", "compute/flops", n);
  c.train_seconds = read_checked<double>(g, "train_seconds", "compute/train_seconds", n);
  c.forest_tokens = h5::get_int(g, "forest_tokens");
  c.dense_tokens = h5::get_int(g, "dense_tokens");
  return c;
}

void write_compute(hid_t root, const EvalCompute& c) {
  h5::Handle g = h5::create_group(root, "compute");
  h5::write_strings(g, "models", c.models);
  h5::make_scale(g, "models");
  h5::set_attr(g, "models", c.models);
  h5::set_attr(g, "continues", c.continues);
  h5::set_attr(g, "forest_tokens", c.forest_tokens);
  h5::set_attr(g, "dense_tokens", c.dense_tokens);
  h5::write_array(g, "steps", c.steps.data(), c.steps.size());
  h5::write_array(g, "global_batch", c.global_batch.data(), c.global_batch.size());
  h5::write_array(g, "tokens", c.tokens.data(), c.tokens.size());
  h5::write_array(g, "flops", c.flops.data(), c.flops.size());
  h5::write_array(g, "train_seconds", c.train_seconds.data(), c.train_seconds.size());
  for (const char* d : {"steps", "global_batch", "tokens", "flops", "train_seconds"})
    h5::attach_scale(g, d, 0, "models", "model");
  h5::set_units(g, "steps", "optimizer steps");
  h5::set_units(g, "global_batch", "sequences");
  h5::set_units(g, "tokens", "tokens");
  h5::set_units(g, "flops", "FLOPs");
  h5::set_units(g, "train_seconds", "s");
}

// The dimension scales of the root's matrices: what each row and column is.
void write_scales(hid_t root, const EvalResults& r) {
  h5::write_strings(root, "methods", r.methods);
  h5::write_strings(root, "domains", r.domains);
  h5::write_strings(root, "elms", r.elms);
  h5::write_strings(root, "schemes", r.schemes);
  h5::write_strings(root, "checkpoints", r.checkpoints);
  for (const char* scale : {"methods", "domains", "elms", "schemes", "checkpoints"})
    h5::make_scale(root, scale);
  const struct {
    const char* dataset;
    std::vector<std::pair<const char*, const char*>> dims;  // scale, label
  } attached[] = {
      {"perplexity", {{"methods", "method"}, {"domains", "domain"}}},
      {"loss", {{"methods", "method"}, {"domains", "domain"}}},
      {"mean_in_domain", {{"methods", "method"}}},
      {"mean_out_domain", {{"methods", "method"}}},
      {"priors", {{"domains", "domain"}, {"elms", "elm"}}},
      {"average_weights", {{"schemes", "scheme"}, {"domains", "domain"}, {"elms", "elm"}}},
      {"tokens", {{"domains", "domain"}}},
      {"checkpoint_steps", {{"checkpoints", "checkpoint"}}},
  };
  for (const auto& [dataset, dims] : attached)
    for (unsigned d = 0; d < dims.size(); ++d)
      h5::attach_scale(root, dataset, d, dims[d].first, dims[d].second);
}

EvalMerges read_merges(hid_t root) {
  h5::Handle g = h5::open_group(root, "merges");
  EvalMerges m;
  m.rows = h5::get_strings(g, "rows");
  m.method = h5::get_strings(g, "method");
  m.scheme = h5::get_strings(g, "scheme");
  m.lambda = h5::get_doubles(g, "lambda");
  m.density = h5::get_doubles(g, "density");
  m.drop = h5::get_doubles(g, "drop");
  m.seed = h5::get_int(g, "seed");
  m.base = h5::get_string(g, "base");
  m.seconds = h5::get_double(g, "seconds");
  const std::size_t n = m.rows.size();
  if (m.method.size() != n || m.scheme.size() != n || m.lambda.size() != n ||
      m.density.size() != n || m.drop.size() != n)
    throw InputError("/merges lists " + std::to_string(n) +
                     " rows but its method, scheme, lambda, density and drop attributes differ "
                     "in length");
  return m;
}

void write_merges(hid_t root, const EvalMerges& m) {
  h5::Handle g = h5::create_group(root, "merges");
  h5::set_attr(g, "rows", m.rows);
  h5::set_attr(g, "method", m.method);
  h5::set_attr(g, "scheme", m.scheme);
  h5::set_attr(g, "lambda", m.lambda);
  h5::set_attr(g, "density", m.density);
  h5::set_attr(g, "drop", m.drop);
  h5::set_attr(g, "seed", m.seed);
  h5::set_attr(g, "base", m.base);
  h5::set_attr(g, "seconds", m.seconds);
}

}  // namespace

void write_eval_file(const fs::path& path, const EvalResults& r) {
  if (const std::string problem = shape_problem(r); !problem.empty())
    throw SystemError("writing " + path.string() + ": " + problem);
  const std::size_t K = r.elms.size(), D = r.domains.size(), M = r.methods.size(),
                    S = r.schemes.size();
  h5::AtomicFile out(path);
  hid_t root = out.root();
  h5::set_attr(root, "format", std::string(kEvalFormat));
  h5::set_attr(root, "format_version", kEvalFormatVersion);
  h5::set_attr(root, "config", r.config);
  h5::set_attr(root, "elms", r.elms);
  h5::set_attr(root, "domains", r.domains);
  h5::set_attr(root, "in_domain", r.in_domain);
  h5::set_attr(root, "posterior", r.posterior);
  h5::set_attr(root, "ranks", r.ranks);
  h5::set_attr(root, "score_seconds", r.score_seconds);
  h5::set_attr(root, "average_seconds", r.average_seconds);
  h5::set_attr(root, "combine_seconds", r.combine_seconds);
  h5::set_attr(root, "route_seconds", r.route_seconds);
  h5::set_attr(root, "btm_version", std::string(btm_version()));
  h5::set_attr(root, "btm_commit", std::string(btm_commit()));
  h5::set_attr(root, "written_at", utc_timestamp(std::time(nullptr)));
  h5::write_matrix(root, "perplexity", r.perplexity.data(), M, D);
  h5::set_attr(open_dataset(root, "perplexity"), "methods", r.methods);
  std::vector<double> loss(r.perplexity.size());
  for (std::size_t i = 0; i < loss.size(); ++i) loss[i] = std::log(r.perplexity[i]);  // NaN stays
  h5::write_matrix(root, "loss", loss.data(), M, D);
  h5::set_units(root, "loss", "nats/token");
  h5::write_array(root, "mean_in_domain", r.mean_in_domain.data(), M);
  h5::write_array(root, "mean_out_domain", r.mean_out_domain.data(), M);
  h5::write_matrix(root, "priors", r.priors.data(), D, K);
  write_doubles(root, "average_weights", r.average_weights, {S, D, K});
  h5::set_attr(open_dataset(root, "average_weights"), "schemes", r.schemes);
  h5::write_array(root, "tokens", r.tokens.data(), D);
  h5::set_units(root, "tokens", "tokens");
  h5::write_array(root, "checkpoint_steps", r.checkpoint_steps.data(), r.checkpoint_steps.size());
  h5::set_units(root, "checkpoint_steps", "optimizer steps");
  write_scales(root, r);
  if (r.compute) write_compute(root, *r.compute);
  if (r.merges) write_merges(root, *r.merges);
  out.commit();
}

EvalResults read_eval_file(const fs::path& path) {
  h5::Handle file = h5::open_file(path, false);  // its InputErrors name the file
  EvalResults r;
  try {
    const std::string format = h5::has_attr(file, "format") ? h5::get_string(file, "format") : "";
    if (format != kEvalFormat)
      throw InputError("not a btm eval file (" +
                       (format.empty() ? std::string("it has no format attribute")
                                       : "its format attribute is '" + format + "'") +
                       ", expected '" + kEvalFormat + "')");
    r.format_version = h5::get_int(file, "format_version");
    if (r.format_version < 1 || r.format_version > kEvalFormatVersion)
      throw InputError("btm eval format version " + std::to_string(r.format_version) +
                       "; this btm reads versions 1 to " + std::to_string(kEvalFormatVersion) +
                       " (use the btm that wrote it: its btm_version attribute says which)");
    r.config = h5::get_string(file, "config");
    r.elms = h5::get_strings(file, "elms");
    r.domains = h5::get_strings(file, "domains");
    r.in_domain = h5::get_doubles(file, "in_domain");
    r.posterior = h5::get_string(file, "posterior");
    r.ranks = h5::get_int(file, "ranks");
    r.score_seconds = h5::get_double(file, "score_seconds");
    r.average_seconds = h5::get_double(file, "average_seconds");
    r.combine_seconds = h5::get_double(file, "combine_seconds");
    if (h5::has_attr(file, "route_seconds"))
      r.route_seconds = h5::get_double(file, "route_seconds");
    const std::size_t K = r.elms.size(), D = r.domains.size();
    if (r.in_domain.size() != D)
      throw InputError("in_domain has " + std::to_string(r.in_domain.size()) + " entries for " +
                       std::to_string(D) + " domains");
    r.methods = h5::get_strings(open_dataset(file, "perplexity"), "methods");
    const std::size_t M = r.methods.size();
    r.perplexity = read_checked<double>(file, "perplexity", "perplexity", {M, D});
    r.mean_in_domain = read_checked<double>(file, "mean_in_domain", "mean_in_domain", {M});
    r.mean_out_domain = read_checked<double>(file, "mean_out_domain", "mean_out_domain", {M});
    r.priors = read_checked<double>(file, "priors", "priors", {D, K});
    r.schemes = h5::get_strings(open_dataset(file, "average_weights"), "schemes");
    r.average_weights =
        read_checked<double>(file, "average_weights", "average_weights", {r.schemes.size(), D, K});
    r.tokens = read_checked<std::int64_t>(file, "tokens", "tokens", {D});
    if (r.format_version >= 2) r.compute = read_compute(file);
    if (r.format_version >= 3) {
      r.btm_version = h5::get_string(file, "btm_version");
      r.btm_commit = h5::get_string(file, "btm_commit");
      r.checkpoints = h5::read_strings(file, "checkpoints");
      r.checkpoint_steps = read_checked<std::int64_t>(file, "checkpoint_steps", "checkpoint_steps",
                                                      {r.checkpoints.size()});
    }
    if (h5::exists(file, "merges")) r.merges = read_merges(file);
  } catch (const InputError& e) {
    throw InputError(path.string() + ": " + e.what());
  } catch (const SystemError& e) {
    throw InputError(path.string() + ": unreadable eval file (" + e.what() + ")");
  }
  return r;
}

}  // namespace btm

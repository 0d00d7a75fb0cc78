#include "btm/io/checkpoint.hpp"

#include <cmath>

#include "btm/io/h5.hpp"
#include "btm/model/params.hpp"
#include "btm/util/error.hpp"

namespace btm {

namespace fs = std::filesystem;

void save_checkpoint(const fs::path& file, const Checkpoint& c) {
  const std::size_t n = ParamLayout(c.model).total();
  if (c.params.size() != n || c.adam_m.size() != n || c.adam_v.size() != n)
    throw std::invalid_argument("save_checkpoint: state vectors do not match the model shape");
  h5::AtomicFile out(file);
  hid_t root = out.root();
  h5::set_attr(root, "format", std::string("btm-checkpoint"));
  h5::set_attr(root, "format_version", static_cast<std::int64_t>(kCheckpointFormatVersion));
  h5::set_attr(root, "name", c.name);
  h5::set_attr(root, "n_layer", static_cast<std::int64_t>(c.model.n_layer));
  h5::set_attr(root, "n_head", static_cast<std::int64_t>(c.model.n_head));
  h5::set_attr(root, "d_model", static_cast<std::int64_t>(c.model.d_model));
  h5::set_attr(root, "context", static_cast<std::int64_t>(c.model.context));
  h5::set_attr(root, "vocab_size", static_cast<std::int64_t>(c.model.vocab_size));
  h5::set_attr(root, "vocab_multiple", static_cast<std::int64_t>(c.model.vocab_multiple));
  h5::set_attr(root, "n_params", static_cast<std::int64_t>(n));
  h5::set_attr(root, "step", c.step);
  h5::set_attr(root, "target_steps", c.target_steps);
  h5::set_attr(root, "schedule_steps", c.schedule_steps);
  h5::set_attr(root, "micro_batch", static_cast<std::int64_t>(c.batch.micro_batch));
  h5::set_attr(root, "micro_batches", c.batch.micro_batches);
  h5::set_attr(root, "sampler_seed", static_cast<std::int64_t>(c.sampler_seed));
  h5::set_attr(root, "sampler_position", static_cast<std::int64_t>(c.sampler_position));
  h5::set_attr(root, "tokens", static_cast<std::int64_t>(c.tokens));
  h5::set_attr(root, "domains", c.domains);
  h5::set_attr(root, "config", c.config_ini);
  h5::write_array(root, "params", c.params.data(), n);
  h5::write_array(root, "adam_m", c.adam_m.data(), n);
  h5::write_array(root, "adam_v", c.adam_v.data(), n);
  out.commit();
}

namespace {

Checkpoint read_attributes(hid_t root) {
  if (!h5::has_attr(root, "format") || h5::get_string(root, "format") != "btm-checkpoint")
    throw InputError("not a btm checkpoint (no format=btm-checkpoint attribute)");
  const std::int64_t version = h5::get_int(root, "format_version");
  if (version != 1 && version != kCheckpointFormatVersion)
    throw InputError("checkpoint format version " + std::to_string(version) +
                     ", this btm reads 1 and " + std::to_string(kCheckpointFormatVersion));
  Checkpoint c;
  c.name = h5::get_string(root, "name");
  c.model.n_layer = static_cast<int>(h5::get_int(root, "n_layer"));
  c.model.n_head = static_cast<int>(h5::get_int(root, "n_head"));
  c.model.d_model = static_cast<int>(h5::get_int(root, "d_model"));
  c.model.context = static_cast<int>(h5::get_int(root, "context"));
  c.model.vocab_size = static_cast<int>(h5::get_int(root, "vocab_size"));
  c.model.vocab_multiple = static_cast<int>(h5::get_int(root, "vocab_multiple"));
  c.step = h5::get_int(root, "step");
  c.target_steps = h5::get_int(root, "target_steps");
  c.schedule_steps = h5::get_int(root, "schedule_steps");
  if (version >= 2) {
    c.batch.micro_batch = static_cast<int>(h5::get_int(root, "micro_batch"));
    c.batch.micro_batches = h5::get_int(root, "micro_batches");
    if (c.batch.micro_batch < 0 || c.batch.micro_batches < 0 ||
        (c.batch.micro_batch == 0) != (c.batch.micro_batches == 0))
      throw InputError("invalid global batch (micro_batch, micro_batches) in the attributes");
  }
  c.sampler_seed = static_cast<std::uint64_t>(h5::get_int(root, "sampler_seed"));
  c.sampler_position = static_cast<std::uint64_t>(h5::get_int(root, "sampler_position"));
  c.tokens = static_cast<std::uint64_t>(h5::get_int(root, "tokens"));
  c.domains = h5::get_strings(root, "domains");
  c.config_ini = h5::get_string(root, "config");
  if (c.model.n_layer < 1 || c.model.n_head < 1 || c.model.d_model < 1 ||
      c.model.d_model % c.model.n_head != 0 || c.model.context < 1 || c.model.vocab_size < 2 ||
      c.model.vocab_multiple < 1 || c.step < 0 || c.target_steps < 0 ||
      c.schedule_steps < c.target_steps)
    throw InputError("invalid model shape or step in the attributes");
  const std::int64_t n = h5::get_int(root, "n_params");
  if (n != static_cast<std::int64_t>(ParamLayout(c.model).total()))
    throw InputError("n_params does not match the model shape");
  return c;
}

std::string describe(const ModelConfig& m) {
  return "L=" + std::to_string(m.n_layer) + " H=" + std::to_string(m.n_head) +
         " d=" + std::to_string(m.d_model) + " T=" + std::to_string(m.context) +
         " V=" + std::to_string(m.vocab_size);
}

std::vector<float> read_vector(hid_t root, const char* name, std::size_t n) {
  const std::vector<std::size_t> shape = h5::shape(root, name);
  if (shape.size() != 1 || shape[0] != n)
    throw InputError(std::string("dataset /") + name + " has the wrong shape (expected " +
                     std::to_string(n) + " floats)");
  std::vector<float> v = h5::read_array<float>(root, name);
  for (std::size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      throw InputError(std::string("dataset /") + name + " holds a non-finite value at index " +
                       std::to_string(i) + " (a diverged or corrupt checkpoint)");
  return v;
}

// Runs `read` on the checkpoint `file`: its InputErrors are rethrown naming the file, and its
// SystemErrors (HDF5 could not read it) become InputErrors saying the file is unreadable.
template <typename Read>
Checkpoint reading(const fs::path& file, Read&& read) {
  try {
    return read();
  } catch (const InputError& e) {
    const std::string what = e.what();
    if (what.starts_with(file.string())) throw;
    throw InputError(file.string() + ": " + what);
  } catch (const SystemError& e) {
    throw InputError(file.string() + ": unreadable checkpoint (" + e.what() + ")");
  }
}

}  // namespace

Checkpoint peek_checkpoint(const fs::path& file) {
  return reading(file, [&] {
    h5::Handle f = h5::open_file(file, false);
    return read_attributes(f);
  });
}

namespace {

void check_shape(const Checkpoint& c, const ModelConfig& expect) {
  if (!(c.model == expect))
    throw InputError("model shape " + describe(c.model) + " differs from the configured " +
                     describe(expect) + ": use the config the checkpoint was made with");
}

std::vector<float> read_state(hid_t f, const std::string& name, std::size_t n) {
  std::vector<float> v = read_vector(f, name.c_str(), n);
  if (name == "adam_v")
    for (float x : v)
      if (x < 0) throw InputError("dataset /adam_v holds a negative second moment");
  return v;
}

}  // namespace

Checkpoint load_checkpoint(const fs::path& file, const ModelConfig* expect, bool with_optimizer) {
  return reading(file, [&] {
    h5::Handle f = h5::open_file(file, false);
    Checkpoint c = read_attributes(f);
    if (expect) check_shape(c, *expect);
    const std::size_t n = ParamLayout(c.model).total();
    c.params = read_state(f, "params", n);
    if (with_optimizer) {
      c.adam_m = read_state(f, "adam_m", n);
      c.adam_v = read_state(f, "adam_v", n);
    }
    return c;
  });
}

std::vector<float> load_state_vector(const fs::path& file, const std::string& name,
                                     const ModelConfig& expect) {
  if (name != "params" && name != "adam_m" && name != "adam_v")
    throw std::invalid_argument("load_state_vector: no state vector named '" + name + "'");
  std::vector<float> v;
  reading(file, [&] {
    h5::Handle f = h5::open_file(file, false);
    Checkpoint c = read_attributes(f);
    check_shape(c, expect);
    v = read_state(f, name, ParamLayout(c.model).total());
    return c;
  });
  return v;
}

}  // namespace btm

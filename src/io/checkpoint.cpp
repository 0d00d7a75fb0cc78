#include "btm/io/checkpoint.hpp"

#include <cmath>
#include <ctime>

#include <nlohmann/json.hpp>

#include "btm/io/h5.hpp"
#include "btm/io/safetensors.hpp"
#include "btm/model/params.hpp"
#include "btm/util/build_info.hpp"
#include "btm/util/error.hpp"
#include "btm/util/format.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

void write_attributes(hid_t root, const CheckpointInfo& c) {
  h5::set_attr(root, "format", std::string("btm-checkpoint"));
  h5::set_attr(root, "format_version", static_cast<std::int64_t>(kCheckpointFormatVersion));
  h5::set_attr(root, "name", c.name);
  for_each_model_field(c.model, [&](const char* key, int value) {
    h5::set_attr(root, key, static_cast<std::int64_t>(value));
  });
  h5::set_attr(root, "n_params", static_cast<std::int64_t>(ParamLayout(c.model).total()));
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
  if (!c.state_from.empty()) {
    h5::set_attr(root, "state_from", c.state_from);
    h5::set_attr(root, "state_from_step", c.state_from_step);
  }
  h5::set_attr(root, "tokenizer", c.tokenizer);
  h5::set_attr(root, "vocab_hash", c.vocab_hash);
  h5::set_attr(root, "btm_version", std::string(btm_version()));
  h5::set_attr(root, "btm_commit", std::string(btm_commit()));
  h5::set_attr(root, "written_at", utc_timestamp(std::time(nullptr)));
  h5::set_attr(root, "weights_only", static_cast<std::int64_t>(c.weights_only ? 1 : 0));
}

// /layout: where each tensor of the flat vectors lies, for readers without params.hpp.
void write_layout(hid_t root, const ModelConfig& model) {
  const ParamLayout layout(model);
  std::vector<std::string> names;
  std::vector<std::int64_t> shapes, offsets, counts;
  for (const TensorSpec& t : layout.tensors()) {
    names.push_back(t.name);
    shapes.push_back(static_cast<std::int64_t>(t.shape.at(0)));
    shapes.push_back(t.shape.size() > 1 ? static_cast<std::int64_t>(t.shape[1]) : 0);
    offsets.push_back(static_cast<std::int64_t>(t.offset));
    counts.push_back(static_cast<std::int64_t>(t.size));
  }
  h5::Handle g = h5::create_group(root, "layout");
  h5::write_strings(g, "name", names);
  h5::write_matrix(g, "shape", shapes.data(), names.size(), 2);
  h5::write_array(g, "offset", offsets.data(), offsets.size());
  h5::write_array(g, "count", counts.data(), counts.size());
  for (const char* d : {"offset", "count"}) h5::set_units(g, d, "floats");
}

}  // namespace

void save_checkpoint(const fs::path& file, const Checkpoint& c) {
  const std::size_t n = ParamLayout(c.model).total();
  if (c.params.size() != n || c.adam_m.size() != n || c.adam_v.size() != n)
    throw std::invalid_argument("save_checkpoint: state vectors do not match the model shape");
  CheckpointInfo info = c;
  info.state_from.clear();  // the state is written here
  info.weights_only = false;
  h5::AtomicFile out(file);
  hid_t root = out.root();
  write_attributes(root, info);
  h5::set_attr(root, "params_dtype", std::string("float32"));
  write_layout(root, c.model);
  h5::write_array(root, "params", c.params.data(), n);
  h5::write_array(root, "adam_m", c.adam_m.data(), n);
  h5::write_array(root, "adam_v", c.adam_v.data(), n);
  out.commit();
}

void save_weights_only(const fs::path& file, const Checkpoint& c, bool bf16) {
  const std::size_t n = ParamLayout(c.model).total();
  if (c.params.size() != n)
    throw std::invalid_argument("save_weights_only: params do not match the model shape");
  CheckpointInfo info = c;
  info.state_from.clear();
  info.weights_only = true;
  h5::AtomicFile out(file);
  hid_t root = out.root();
  write_attributes(root, info);
  write_layout(root, c.model);
  h5::set_attr(root, "params_dtype", std::string(bf16 ? "bfloat16" : "float32"));
  if (bf16) {
    std::vector<std::uint16_t> half(n);
    for (std::size_t i = 0; i < n; ++i) half[i] = safetensors::bf16_from_float(c.params[i]);
    h5::write_array(root, "params", half.data(), n);
  } else {
    h5::write_array(root, "params", c.params.data(), n);
  }
  out.commit();
}

namespace {

CheckpointInfo read_attributes(hid_t root) {
  if (!h5::has_attr(root, "format") || h5::get_string(root, "format") != "btm-checkpoint")
    throw InputError("not a btm checkpoint (no format=btm-checkpoint attribute)");
  const std::int64_t version = h5::get_int(root, "format_version");
  if (version < 1 || version > kCheckpointFormatVersion)
    throw InputError("checkpoint format version " + std::to_string(version) +
                     ", this btm reads 1 to " + std::to_string(kCheckpointFormatVersion) +
                     ": read it with the btm that wrote it (its btm_version attribute says which)");
  CheckpointInfo c;
  c.name = h5::get_string(root, "name");
  for_each_model_field(c.model, [&](const char* key, int& value) {
    value = static_cast<int>(h5::get_int(root, key));
  });
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
  if (version >= 3) {
    c.tokenizer = h5::get_string(root, "tokenizer");
    c.vocab_hash = h5::get_string(root, "vocab_hash");
    c.btm_version = h5::get_string(root, "btm_version");
    c.btm_commit = h5::get_string(root, "btm_commit");
    c.written_at = h5::get_string(root, "written_at");
    c.weights_only = h5::get_int(root, "weights_only") != 0;
  }
  if (h5::has_attr(root, "state_from")) {
    c.state_from = h5::get_string(root, "state_from");
    c.state_from_step = h5::get_int(root, "state_from_step");
    if (c.state_from.empty() || c.state_from.find('/') != std::string::npos)
      throw InputError("state_from must name a checkpoint in the same directory");
  }
  try {
    validate_model(c.model);
  } catch (const InputError& e) {
    throw InputError(std::string("invalid model shape in the attributes: ") + e.what());
  }
  if (c.step < 0 || c.target_steps < 0 || c.schedule_steps < c.target_steps)
    throw InputError("invalid step, target_steps or schedule_steps in the attributes");
  const std::int64_t n = h5::get_int(root, "n_params");
  if (n != static_cast<std::int64_t>(ParamLayout(c.model).total()))
    throw InputError("n_params does not match the model shape");
  return c;
}

std::vector<float> read_vector(hid_t root, const char* name, std::size_t n) {
  const std::vector<std::size_t> shape = h5::shape(root, name);
  if (shape.size() != 1 || shape[0] != n)
    throw InputError(std::string("dataset /") + name + " has the wrong shape (expected " +
                     std::to_string(n) + " floats)");
  std::vector<float> v;
  const bool bf16 = h5::has_attr(root, "params_dtype") &&
                    h5::get_string(root, "params_dtype") == "bfloat16" &&
                    std::string(name) == "params";
  if (bf16) {
    const std::vector<std::uint16_t> half = h5::read_array<std::uint16_t>(root, name);
    v.resize(half.size());
    for (std::size_t i = 0; i < half.size(); ++i) v[i] = safetensors::float_from_bf16(half[i]);
  } else {
    v = h5::read_array<float>(root, name);
  }
  for (std::size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      throw InputError(std::string("dataset /") + name + " holds a non-finite value at index " +
                       std::to_string(i) + " (a diverged or corrupt checkpoint)");
  return v;
}

// Runs `read` on the checkpoint `file`: its InputErrors are rethrown naming the file, and its
// SystemErrors (HDF5 could not read it) become InputErrors saying the file is unreadable.
template <typename Read>
auto reading(const fs::path& file, Read&& read) -> decltype(read()) {
  try {
    return read();
  } catch (const InputError& e) {
    const std::string what = e.what();
    if (what.starts_with(file.string())) throw;
    throw InputError(file.string() + ": " + what);
  } catch (const SystemError& e) {
    throw InputError(file.string() + ": unreadable checkpoint (" + e.what() +
                     "): train the model again (btm run continues from its manifest), or "
                     "restore the file from a copy");
  }
}

}  // namespace

CheckpointInfo peek_checkpoint(const fs::path& file) {
  return reading(file, [&] {
    h5::Handle f = h5::open_file(file, false);
    return read_attributes(f);
  });
}

namespace {

void check_shape(const CheckpointInfo& c, const ModelConfig& expect) {
  if (!(c.model == expect))
    throw InputError("model shape " + describe_model(c.model) + " differs from the configured " +
                     describe_model(expect) + ": use the config the checkpoint was made with");
}

// /layout (format 3) must be the order this btm reads the vectors in.
void check_layout(hid_t f, const ModelConfig& model) {
  if (!h5::exists(f, "layout")) return;
  h5::Handle g = h5::open_group(f, "layout");
  const std::vector<std::string> names = h5::read_strings(g, "name");
  const std::vector<std::int64_t> offsets = h5::read_array<std::int64_t>(g, "offset");
  const ParamLayout layout(model);
  const std::vector<TensorSpec>& tensors = layout.tensors();
  bool same = names.size() == tensors.size() && offsets.size() == tensors.size();
  for (std::size_t i = 0; same && i < tensors.size(); ++i)
    same =
        names[i] == tensors[i].name && offsets[i] == static_cast<std::int64_t>(tensors[i].offset);
  if (!same)
    throw InputError(
        "its /layout lists other tensors or offsets than this btm's parameter order "
        "for " +
        describe_model(model) + ": read it with the btm that wrote it");
}

// A weights-only checkpoint has no AdamW moments to read.
void check_trainable_state(const CheckpointInfo& c) {
  if (c.weights_only)
    throw InputError(
        "a weights-only checkpoint (btm export --weights-only: params, no AdamW moments): it "
        "can be evaluated, exported and sampled from (btm forest add puts it in a forest), not "
        "trained further; train from the full checkpoint it was exported from");
}

std::vector<float> read_state(hid_t f, const std::string& name, std::size_t n) {
  std::vector<float> v = read_vector(f, name.c_str(), n);
  if (name == "adam_v")
    for (float x : v)
      if (x < 0) throw InputError("dataset /adam_v holds a negative second moment");
  return v;
}

}  // namespace

namespace {

// The checkpoint file holding the state of `file` (header `c`): `file` itself, or the one its
// state_from names, checked to still hold the state the reference was made of.
fs::path state_path(const fs::path& file, const CheckpointInfo& c) {
  if (c.state_from.empty()) return file;
  const fs::path source = file.parent_path() / c.state_from;
  const std::string branch = "its state is that of " + source.string() + " at step " +
                             std::to_string(c.state_from_step) + " (a branch not trained yet)";
  if (!fs::exists(source))
    throw InputError(branch + ", which is missing: restore it, or remove this checkpoint and " +
                     "branch again");
  const CheckpointInfo s = peek_checkpoint(source);
  if (!s.state_from.empty() || !(s.model == c.model) || s.step != c.state_from_step)
    throw InputError(branch + ", which now holds another state (step " + std::to_string(s.step) +
                     ", " + describe_model(s.model) + "): remove this checkpoint and branch again");
  return source;
}

}  // namespace

CheckpointInfo save_checkpoint_reference(const fs::path& file, CheckpointInfo info,
                                         const fs::path& source) {
  if (source.parent_path() != file.parent_path())
    throw std::invalid_argument(
        "save_checkpoint_reference: the source must be in the same directory");
  const CheckpointInfo s = peek_checkpoint(source);
  if (!s.state_from.empty() || !(s.model == info.model))
    throw std::invalid_argument("save_checkpoint_reference: " + source.string() +
                                " cannot be referenced by " + file.string());
  info.state_from = source.filename().string();
  info.state_from_step = s.step;
  h5::AtomicFile out(file);
  write_attributes(out.root(), info);
  out.commit();
  return info;
}

Checkpoint load_checkpoint(const fs::path& file, const ModelConfig* expect, bool with_optimizer) {
  return reading(file, [&] {
    Checkpoint c;
    {
      h5::Handle f = h5::open_file(file, false);
      static_cast<CheckpointInfo&>(c) = read_attributes(f);
    }
    if (expect) check_shape(c, *expect);
    if (with_optimizer) check_trainable_state(c);
    const std::size_t n = ParamLayout(c.model).total();
    const fs::path source = state_path(file, c);
    reading(source, [&] {
      h5::Handle f = h5::open_file(source, false);
      check_layout(f, c.model);
      c.params = read_state(f, "params", n);
      if (with_optimizer) {
        c.adam_m = read_state(f, "adam_m", n);
        c.adam_v = read_state(f, "adam_v", n);
      }
      return 0;
    });
    return c;
  });
}

std::vector<float> load_state_vector(const fs::path& file, const std::string& name,
                                     const ModelConfig& expect) {
  if (name != "params" && name != "adam_m" && name != "adam_v")
    throw std::invalid_argument("load_state_vector: no state vector named '" + name + "'");
  std::vector<float> v;
  reading(file, [&] {
    const CheckpointInfo c = peek_checkpoint(file);
    check_shape(c, expect);
    if (name != "params") check_trainable_state(c);
    const fs::path source = state_path(file, c);
    return reading(source, [&] {
      h5::Handle f = h5::open_file(source, false);
      check_layout(f, c.model);
      v = read_state(f, name, ParamLayout(c.model).total());
      return 0;
    });
  });
  return v;
}

namespace {

// The header as JSON, to send it to the ranks of a group.
std::string info_json(const CheckpointInfo& c) {
  nlohmann::json j;
  j["name"] = c.name;
  for_each_model_field(c.model, [&](const char* key, int value) { j["model"][key] = value; });
  j["step"] = c.step;
  j["target_steps"] = c.target_steps;
  j["schedule_steps"] = c.schedule_steps;
  j["micro_batch"] = c.batch.micro_batch;
  j["micro_batches"] = c.batch.micro_batches;
  j["sampler_seed"] = c.sampler_seed;
  j["sampler_position"] = c.sampler_position;
  j["tokens"] = c.tokens;
  j["domains"] = c.domains;
  j["config"] = c.config_ini;
  j["state_from"] = c.state_from;
  j["state_from_step"] = c.state_from_step;
  j["tokenizer"] = c.tokenizer;
  j["vocab_hash"] = c.vocab_hash;
  j["btm_version"] = c.btm_version;
  j["btm_commit"] = c.btm_commit;
  j["written_at"] = c.written_at;
  j["weights_only"] = c.weights_only;
  return j.dump();
}

CheckpointInfo info_from_json(const std::string& text) {
  const nlohmann::json j = nlohmann::json::parse(text);
  CheckpointInfo c;
  j.at("name").get_to(c.name);
  for_each_model_field(c.model,
                       [&](const char* key, int& value) { j.at("model").at(key).get_to(value); });
  j.at("step").get_to(c.step);
  j.at("target_steps").get_to(c.target_steps);
  j.at("schedule_steps").get_to(c.schedule_steps);
  j.at("micro_batch").get_to(c.batch.micro_batch);
  j.at("micro_batches").get_to(c.batch.micro_batches);
  j.at("sampler_seed").get_to(c.sampler_seed);
  j.at("sampler_position").get_to(c.sampler_position);
  j.at("tokens").get_to(c.tokens);
  j.at("domains").get_to(c.domains);
  j.at("config").get_to(c.config_ini);
  j.at("state_from").get_to(c.state_from);
  j.at("state_from_step").get_to(c.state_from_step);
  j.at("tokenizer").get_to(c.tokenizer);
  j.at("vocab_hash").get_to(c.vocab_hash);
  j.at("btm_version").get_to(c.btm_version);
  j.at("btm_commit").get_to(c.btm_commit);
  j.at("written_at").get_to(c.written_at);
  j.at("weights_only").get_to(c.weights_only);
  return c;
}

// Rank 0's attributes to every rank of `group`.
void broadcast_info(MpiComm& group, CheckpointInfo& c) {
  if (group.size() == 1) return;
  std::string info = group.rank() == 0 ? info_json(c) : std::string();
  group.broadcast_string(info, 0);
  if (group.rank() != 0) c = info_from_json(info);
}

}  // namespace

CheckpointInfo peek_checkpoint_in_group(MpiComm& group, const fs::path& file) {
  CheckpointInfo c;
  collective_check(group, [&] {
    if (group.rank() == 0) c = peek_checkpoint(file);
  });
  broadcast_info(group, c);
  return c;
}

Checkpoint load_checkpoint_in_group(MpiComm& group, const fs::path& file, const ModelConfig* expect,
                                    bool with_optimizer) {
  Checkpoint c;
  collective_check(group, [&] {
    if (group.rank() == 0) c = load_checkpoint(file, expect, with_optimizer);
  });
  broadcast_checkpoint(group, c, with_optimizer);
  return c;
}

void broadcast_checkpoint(MpiComm& group, Checkpoint& c, bool with_optimizer) {
  if (group.size() == 1) return;
  broadcast_info(group, c);
  group.broadcast_vector(c.params, 0);
  if (with_optimizer) {
    group.broadcast_vector(c.adam_m, 0);
    group.broadcast_vector(c.adam_v, 0);
  }
}

}  // namespace btm

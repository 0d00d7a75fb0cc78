#include "btm/io/hf_gpt2.hpp"

#include <cmath>
#include <fstream>
#include <memory>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "btm/io/h5.hpp"
#include "btm/util/error.hpp"

namespace btm::hf {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The engines' LayerNorm epsilon (cpu/kernels/layernorm.hpp) and GELU (tanh approximation).
constexpr double kLayerNormEps = 1e-5;

std::string shape_text(const std::vector<std::size_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// What a tensor's dimensions are, for messages.
std::string shape_meaning(const TensorSpec& t) {
  if (t.name == "wte") return " ([vocab_size, n_embd])";
  if (t.name == "wpe") return " ([n_positions, n_embd])";
  if (t.name.ends_with("attn.c_attn.weight")) return " ([n_embd, 3 n_embd], Conv1D layout)";
  if (t.name.ends_with("mlp.c_fc.weight")) return " ([n_embd, 4 n_embd], Conv1D layout)";
  if (t.name.ends_with("mlp.c_proj.weight")) return " ([4 n_embd, n_embd], Conv1D layout)";
  if (t.name.ends_with("attn.c_proj.weight")) return " ([n_embd, n_embd], Conv1D layout)";
  return "";
}

json read_json(const fs::path& file) {
  std::ifstream in(file);
  if (!fs::is_regular_file(file) || !in)
    throw InputError(file.string() +
                     " not found: a Hugging Face model directory holds "
                     "config.json and model.safetensors (save_pretrained)");
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw InputError(file.string() + ": not valid JSON (" + e.what() + ")");
  }
}

int int_key(const json& config, const fs::path& file, std::initializer_list<const char*> keys) {
  for (const char* key : keys) {
    if (!config.contains(key) || config[key].is_null()) continue;
    if (!config[key].is_number_integer() || config[key].get<long long>() < 1 ||
        config[key].get<long long>() > std::numeric_limits<int>::max())
      throw InputError(file.string() + ": \"" + key + "\" is " + config[key].dump() +
                       ", not a positive integer");
    return config[key].get<int>();
  }
  throw InputError(file.string() + ": no \"" + *keys.begin() + "\" (a GPT2Config needs it)");
}

// A key that must have one value for btm's engines to compute the model exactly.
void require(const json& config, const fs::path& file, const char* key, const json& fallback,
             const std::vector<json>& accepted, const std::string& why) {
  const json value = config.contains(key) ? config[key] : fallback;
  for (const json& a : accepted)
    if (value == a) return;
  throw InputError(file.string() + ": \"" + key + "\" is " + value.dump() + ", btm needs " +
                   accepted.front().dump() + " (" + why + ")");
}

// One source tensor: the shard that holds it and its header entry.
struct Source {
  const safetensors::Reader* reader = nullptr;
  const safetensors::TensorInfo* info = nullptr;
};

bool is_mask_buffer(const std::string& name) {
  return name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias");
}

}  // namespace

std::string hf_name(const TensorSpec& t) {
  return "transformer." + t.name + (t.name == "wte" || t.name == "wpe" ? ".weight" : "");
}

bool is_conv1d(const TensorSpec& t) {
  return t.shape.size() == 2 && t.name != "wte" && t.name != "wpe";
}

std::vector<std::size_t> hf_shape(const TensorSpec& t, const ModelConfig& model) {
  if (t.name == "wte") return {static_cast<std::size_t>(model.vocab_size), t.shape[1]};
  if (is_conv1d(t)) return {t.shape[1], t.shape[0]};
  return t.shape;
}

void write_config(const fs::path& file, const ModelConfig& m, safetensors::Dtype dtype) {
  const int eot = m.vocab_size - 1;  // end-of-text is the last id of both btm tokenizers
  nlohmann::ordered_json c;
  c["architectures"] = {"GPT2LMHeadModel"};
  c["model_type"] = "gpt2";
  c["vocab_size"] = m.vocab_size;
  c["n_positions"] = m.context;
  c["n_ctx"] = m.context;
  c["n_embd"] = m.d_model;
  c["n_layer"] = m.n_layer;
  c["n_head"] = m.n_head;
  c["n_inner"] = nullptr;
  c["activation_function"] = "gelu_new";
  c["layer_norm_epsilon"] = kLayerNormEps;
  c["resid_pdrop"] = 0.0;
  c["embd_pdrop"] = 0.0;
  c["attn_pdrop"] = 0.0;
  c["initializer_range"] = 0.02;
  c["scale_attn_weights"] = true;
  c["scale_attn_by_inverse_layer_idx"] = false;
  c["reorder_and_upcast_attn"] = false;
  c["tie_word_embeddings"] = true;
  c["bos_token_id"] = eot;
  c["eos_token_id"] = eot;
  c["use_cache"] = true;
  c["torch_dtype"] = dtype == safetensors::Dtype::bf16 ? "bfloat16" : "float32";
  const fs::path tmp = file.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << c.dump(2) << "\n";
    out.flush();
    if (!out) throw SystemError("cannot write " + tmp.string());
  }
  h5::fsync_path(tmp);
  fs::rename(tmp, file);
}

void write_weights(const fs::path& file, const ModelConfig& model, std::span<const float> params,
                   safetensors::Dtype dtype, const std::map<std::string, std::string>& metadata) {
  const ParamLayout layout(model);
  if (params.size() != layout.total())
    throw std::invalid_argument("hf::write_weights: parameter vector has the wrong size");
  std::vector<std::vector<float>> transposed;  // Conv1D copies, alive until the write
  std::vector<safetensors::TensorData> tensors;
  for (const TensorSpec& t : layout.tensors()) {
    const std::vector<std::size_t> shape = hf_shape(t, model);
    std::size_t n = 1;
    for (std::size_t d : shape) n *= d;
    std::span<const float> values = params.subspan(t.offset, n);  // wte: the real rows only
    if (is_conv1d(t)) {
      const std::size_t out = t.shape[0], in = t.shape[1];
      std::vector<float>& c = transposed.emplace_back(t.size);
      for (std::size_t o = 0; o < out; ++o)
        for (std::size_t i = 0; i < in; ++i) c[i * out + o] = values[o * in + i];
      values = c;
    }
    tensors.push_back({hf_name(t), shape, values});
  }
  std::map<std::string, std::string> meta = metadata;
  meta["format"] = "pt";  // transformers refuses a safetensors file without it
  safetensors::write_file(file, tensors, dtype, meta);
}

ModelConfig read_config(const fs::path& dir, int vocab_multiple) {
  const fs::path file = dir / "config.json";
  const json c = read_json(file);
  if (!c.is_object()) throw InputError(file.string() + ": not a JSON object");
  if (c.contains("model_type") && c["model_type"] != "gpt2")
    throw InputError(file.string() + ": model_type is " + c["model_type"].dump() +
                     ", btm imports GPT-2 models (\"gpt2\", GPT2LMHeadModel)");
  ModelConfig m;
  m.n_layer = int_key(c, file, {"n_layer"});
  m.n_head = int_key(c, file, {"n_head"});
  m.d_model = int_key(c, file, {"n_embd"});
  m.context = int_key(c, file, {"n_positions", "n_ctx"});
  m.vocab_size = int_key(c, file, {"vocab_size"});
  m.vocab_multiple = vocab_multiple;
  require(c, file, "activation_function", "gelu_new", {"gelu_new", "gelu_pytorch_tanh"},
          "the tanh-approximated GELU of btm's engines");
  if (c.contains("n_inner") && !c["n_inner"].is_null())  // null: 4 n_embd
    require(c, file, "n_inner", nullptr, {json(4 * m.d_model)}, "an MLP of width 4 n_embd");
  if (c.contains("layer_norm_epsilon") &&
      !(c["layer_norm_epsilon"].is_number() &&
        std::abs(c["layer_norm_epsilon"].get<double>() - kLayerNormEps) <= 1e-12))
    throw InputError(file.string() + ": \"layer_norm_epsilon\" is " +
                     c["layer_norm_epsilon"].dump() + ", btm's LayerNorm uses 1e-05");
  require(c, file, "tie_word_embeddings", true, {true}, "the output head is the token embedding");
  require(c, file, "scale_attn_weights", true, {true}, "attention scaled by 1/sqrt(head_dim)");
  require(c, file, "scale_attn_by_inverse_layer_idx", false, {false},
          "no extra per-layer attention scaling");
  require(c, file, "add_cross_attention", false, {false}, "a decoder-only model");
  try {
    validate_model(m);
  } catch (const InputError& e) {
    throw InputError(file.string() + ": a shape btm cannot train: " + e.what());
  }
  return m;
}

std::vector<float> read_weights(const fs::path& dir, const ModelConfig& model) {
  // The files: one model.safetensors, or the shards its index names.
  std::vector<std::unique_ptr<safetensors::Reader>> readers;
  if (fs::exists(dir / "model.safetensors")) {
    readers.push_back(std::make_unique<safetensors::Reader>(dir / "model.safetensors"));
  } else if (fs::exists(dir / "model.safetensors.index.json")) {
    const json index = read_json(dir / "model.safetensors.index.json");
    std::set<std::string> shards;
    if (index.contains("weight_map") && index["weight_map"].is_object())
      for (const auto& [name, shard] : index["weight_map"].items())
        if (shard.is_string()) shards.insert(shard.get<std::string>());
    if (shards.empty())
      throw InputError((dir / "model.safetensors.index.json").string() +
                       ": no \"weight_map\" of tensor names to shard files");
    for (const std::string& shard : shards) {
      if (shard.find('/') != std::string::npos)
        throw InputError((dir / "model.safetensors.index.json").string() + ": shard '" + shard +
                         "' is not a file name in the directory");
      readers.push_back(std::make_unique<safetensors::Reader>(dir / shard));
    }
  } else {
    throw InputError(
        dir.string() +
        ": no model.safetensors (nor model.safetensors.index.json): save the model with "
        "model.save_pretrained(DIR) (safetensors is the default of transformers; "
        "pytorch_model.bin is not read)");
  }
  std::map<std::string, Source> sources;  // by name without "transformer."
  for (const auto& reader : readers)
    for (const safetensors::TensorInfo& t : reader->tensors()) {
      std::string name = t.name;
      if (name.starts_with("transformer.")) name = name.substr(12);
      if (sources.contains(name))
        throw InputError(reader->file().string() + ": tensor '" + t.name +
                         "' appears twice in the model's files");
      sources[name] = {reader.get(), &t};
    }

  const ParamLayout layout(model);
  std::vector<float> params(layout.total(), 0.0f);  // padded vocabulary rows stay zero
  std::set<std::string> used;
  const std::string what = "GPT2LMHeadModel n_layer=" + std::to_string(model.n_layer) +
                           " n_embd=" + std::to_string(model.d_model) +
                           " vocab_size=" + std::to_string(model.vocab_size) +
                           " n_positions=" + std::to_string(model.context);
  for (const TensorSpec& t : layout.tensors()) {
    const std::string key = hf_name(t).substr(12);
    const auto it = sources.find(key);
    if (it == sources.end())
      throw InputError(dir.string() + ": missing tensor '" + hf_name(t) + "' of " + what +
                       " (config.json and the weights disagree, or the file is incomplete)");
    const Source& s = it->second;
    const std::vector<std::size_t> expect = hf_shape(t, model);
    if (s.info->shape != expect)
      throw InputError(s.reader->file().string() + ": tensor '" + s.info->name + "' has shape " +
                       shape_text(s.info->shape) + ", expected " + shape_text(expect) +
                       shape_meaning(t) + " for " + what);
    const std::vector<float> values = s.reader->read_f32(*s.info);
    for (std::size_t i = 0; i < values.size(); ++i)
      if (!std::isfinite(values[i]))
        throw InputError(s.reader->file().string() + ": tensor '" + s.info->name +
                         "' holds a non-finite value at index " + std::to_string(i));
    float* out = params.data() + t.offset;
    if (is_conv1d(t)) {
      const std::size_t rows = t.shape[0], cols = t.shape[1];  // btm [out, in]
      for (std::size_t o = 0; o < rows; ++o)
        for (std::size_t i = 0; i < cols; ++i) out[o * cols + i] = values[i * rows + o];
    } else {
      std::copy(values.begin(), values.end(), out);
    }
    used.insert(key);
  }
  for (const auto& [name, s] : sources) {
    if (used.contains(name) || is_mask_buffer(name)) continue;
    if (name == "lm_head.weight") {
      // Tied in btm: accept the head only as a copy of the embedding.
      const std::size_t V = static_cast<std::size_t>(model.vocab_size);
      const std::size_t C = static_cast<std::size_t>(model.d_model);
      const std::vector<float> wte(params.begin(), params.begin() + static_cast<long>(V * C));
      if (s.info->shape != std::vector<std::size_t>{V, C} || s.reader->read_f32(*s.info) != wte)
        throw InputError(s.reader->file().string() +
                         ": tensor 'lm_head.weight' differs from transformer.wte.weight: btm "
                         "ties the output head to the token embedding, this model does not");
      continue;
    }
    throw InputError(s.reader->file().string() + ": unexpected tensor '" + s.info->name +
                     "': not a weight of " + what);
  }
  return params;
}

}  // namespace btm::hf

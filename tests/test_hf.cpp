// btm import and btm export (Hugging Face GPT-2 directories). The safetensors files the import
// tests read are written here by hand (header JSON by string concatenation, data bytes by
// memcpy), and the exported files are parsed here by hand, not by io/safetensors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "btm/io/checkpoint.hpp"
#include "btm/io/eval_file.hpp"
#include "btm/io/forest.hpp"
#include "btm/model/params.hpp"
#include "btm/util/rng.hpp"
#include "test_util.hpp"

namespace btm {
namespace {

namespace fs = std::filesystem;

// ---- a GPT-2 directory written by hand ------------------------------------------------------

struct HandTensor {
  std::string name, dtype;
  std::vector<std::size_t> shape;
  std::vector<float> values;  // row-major in the HF layout
};

// Exact in F32, BF16 and F16 (multiples of 1/8 below 32), distinct inside every tensor here.
float hand_value(std::size_t tensor, std::size_t i) {
  return static_cast<float>(static_cast<int>((tensor * 53 + i) % 509) - 254) * 0.125f;
}

// GPT2LMHeadModel's tensors for `m`, in HF's names and [in, out] Conv1D shapes.
std::vector<HandTensor> hand_gpt2(const ModelConfig& m, const std::string& dtype) {
  const std::size_t C = static_cast<std::size_t>(m.d_model);
  std::vector<std::pair<std::string, std::vector<std::size_t>>> list = {
      {"transformer.wte.weight", {static_cast<std::size_t>(m.vocab_size), C}},
      {"transformer.wpe.weight", {static_cast<std::size_t>(m.context), C}}};
  for (int l = 0; l < m.n_layer; ++l) {
    const std::string p = "transformer.h." + std::to_string(l) + ".";
    list.push_back({p + "ln_1.weight", {C}});
    list.push_back({p + "ln_1.bias", {C}});
    list.push_back({p + "attn.c_attn.weight", {C, 3 * C}});
    list.push_back({p + "attn.c_attn.bias", {3 * C}});
    list.push_back({p + "attn.c_proj.weight", {C, C}});
    list.push_back({p + "attn.c_proj.bias", {C}});
    list.push_back({p + "ln_2.weight", {C}});
    list.push_back({p + "ln_2.bias", {C}});
    list.push_back({p + "mlp.c_fc.weight", {C, 4 * C}});
    list.push_back({p + "mlp.c_fc.bias", {4 * C}});
    list.push_back({p + "mlp.c_proj.weight", {4 * C, C}});
    list.push_back({p + "mlp.c_proj.bias", {C}});
  }
  list.push_back({"transformer.ln_f.weight", {C}});
  list.push_back({"transformer.ln_f.bias", {C}});
  std::vector<HandTensor> out;
  for (std::size_t k = 0; k < list.size(); ++k) {
    HandTensor t{list[k].first, dtype, list[k].second, {}};
    std::size_t n = 1;
    for (std::size_t d : t.shape) n *= d;
    for (std::size_t i = 0; i < n; ++i) t.values.push_back(hand_value(k, i));
    out.push_back(std::move(t));
  }
  return out;
}

std::uint16_t half_bits(float v) {  // exact for the hand values (normal numbers or zero)
  if (v == 0) return 0;
  const std::uint16_t sign = v < 0 ? 0x8000 : 0;
  int e = 0;
  const float frac = std::frexp(std::fabs(v), &e);  // |v| = frac * 2^e, frac in [0.5, 1)
  const int mantissa = static_cast<int>((frac * 2 - 1) * 1024);
  return static_cast<std::uint16_t>(sign | ((e - 1 + 15) << 10) | mantissa);
}

std::string encode(const HandTensor& t) {
  std::string bytes;
  for (float v : t.values) {
    if (t.dtype == "F32" || t.dtype == "I32") {
      char b[4];
      std::memcpy(b, &v, 4);
      bytes.append(b, 4);
    } else {
      std::uint16_t h;
      if (t.dtype == "BF16") {
        std::uint32_t u;
        std::memcpy(&u, &v, 4);
        h = static_cast<std::uint16_t>(u >> 16);  // exact: the low half is zero
      } else {
        h = half_bits(v);
      }
      bytes.append(reinterpret_cast<const char*>(&h), 2);
    }
  }
  return bytes;
}

void write_hand_safetensors(const fs::path& file, const std::vector<HandTensor>& tensors) {
  std::string header = "{\"__metadata__\":{\"format\":\"pt\"}", data;
  for (const HandTensor& t : tensors) {
    const std::string bytes = encode(t);
    header += ",\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[";
    for (std::size_t i = 0; i < t.shape.size(); ++i)
      header += (i ? "," : "") + std::to_string(t.shape[i]);
    header += "],\"data_offsets\":[" + std::to_string(data.size()) + "," +
              std::to_string(data.size() + bytes.size()) + "]}";
    data += bytes;
  }
  header += "}";
  std::ofstream out(file, std::ios::binary);
  const std::uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header << data;
}

void write_hand_config(const fs::path& dir, const ModelConfig& m, const std::string& extra = "") {
  std::ofstream(dir / "config.json")
      << "{\"architectures\": [\"GPT2LMHeadModel\"], \"model_type\": \"gpt2\", \"n_layer\": "
      << m.n_layer << ", \"n_head\": " << m.n_head << ", \"n_embd\": " << m.d_model
      << ", \"n_positions\": " << m.context << ", \"vocab_size\": " << m.vocab_size
      << ", \"activation_function\": \"gelu_new\", \"layer_norm_epsilon\": 1e-05, "
         "\"n_inner\": null"
      << extra << "}";
}

fs::path hand_model_dir(const fs::path& dir, const ModelConfig& m,
                        const std::vector<HandTensor>& tensors) {
  fs::create_directories(dir);
  write_hand_config(dir, m);
  write_hand_safetensors(dir / "model.safetensors", tensors);
  return dir;
}

test::CommandResult import(const fs::path& hf, const fs::path& out, const std::string& more = "") {
  return test::run_btm("import --hf " + hf.string() + " --out " + out.string() +
                       " --model.vocab_multiple 8 " + more);
}

// The flat btm vector the hand tensors stand for: Conv1D weights transposed back to [out, in],
// the padded vocabulary rows zero.
std::vector<float> expected_params(const ModelConfig& m, const std::vector<HandTensor>& tensors) {
  const ParamLayout layout(m);
  std::vector<float> p(layout.total(), 0.0f);
  for (const TensorSpec& t : layout.tensors()) {
    const std::string name =
        "transformer." + t.name + (t.name == "wte" || t.name == "wpe" ? ".weight" : "");
    const HandTensor* h = nullptr;
    for (const HandTensor& x : tensors)
      if (x.name == name) h = &x;
    EXPECT_NE(h, nullptr) << name;
    if (!h) continue;
    const bool conv1d = t.shape.size() == 2 && t.name != "wte" && t.name != "wpe";
    if (conv1d) {
      const std::size_t out = t.shape[0], in = t.shape[1];
      for (std::size_t o = 0; o < out; ++o)
        for (std::size_t i = 0; i < in; ++i) p[t.offset + o * in + i] = h->values[i * out + o];
    } else {
      std::copy(h->values.begin(), h->values.end(), p.begin() + static_cast<long>(t.offset));
    }
  }
  return p;
}

TEST(HfImport, PlacesEveryTensorWithTheConv1DTransposes) {
  test::TempDir dir("btm-hf");
  ModelConfig m = test::small_model();
  m.n_layer = 2;
  for (const std::string dtype : {"F32", "BF16", "F16"}) {
    const auto tensors = hand_gpt2(m, dtype);
    const fs::path hf = hand_model_dir(dir / dtype, m, tensors);
    const fs::path out = dir / (dtype + ".h5");
    const auto r = import(hf, out);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const Checkpoint c = load_checkpoint(out, &m);
    EXPECT_EQ(c.params, expected_params(m, tensors)) << dtype;
    EXPECT_EQ(c.adam_m, std::vector<float>(c.params.size(), 0.0f));
    EXPECT_EQ(c.adam_v, std::vector<float>(c.params.size(), 0.0f));
    EXPECT_EQ(c.step, 0);
    EXPECT_EQ(c.name, dtype);
    // One spot by hand: c_attn [in=C, out=3C] element (i=1, o=9) is btm's row 9, column 1.
    const ParamLayout layout(m);
    const std::size_t C = 8;
    EXPECT_EQ(c.params[layout.block(0).qkv_w + 9 * C + 1], tensors[4].values[1 * 3 * C + 9]);
  }
}

TEST(HfImport, AcceptsUnprefixedNamesMaskBuffersAndATiedHead) {
  test::TempDir dir("btm-hf");
  const ModelConfig m = test::small_model();
  auto tensors = hand_gpt2(m, "F32");
  const std::vector<float> expect = expected_params(m, tensors);
  for (HandTensor& t : tensors) t.name = t.name.substr(12);  // as the hub's gpt2 stores them
  tensors.push_back({"h.0.attn.bias", "F32", {1, 1, 4, 4}, std::vector<float>(16, 1.0f)});
  HandTensor head = tensors[0];
  head.name = "lm_head.weight";
  tensors.push_back(head);
  const auto r = import(hand_model_dir(dir / "hf", m, tensors), dir / "out.h5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(load_checkpoint(dir / "out.h5", &m).params, expect);
}

// Bad input: exit 2, a message naming the tensor and what was expected, no file written.
void expect_refused(const test::CommandResult& r, const fs::path& out,
                    const std::vector<std::string>& words) {
  EXPECT_EQ(r.exit_code, 2) << r.output;
  for (const std::string& w : words) EXPECT_NE(r.output.find(w), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out)) << out;
  for (const auto& entry : fs::directory_iterator(out.parent_path()))
    EXPECT_EQ(entry.path().string().find(".tmp"), std::string::npos) << entry.path();
}

TEST(HfImport, RefusesBadInputNamingTheTensor) {
  test::TempDir dir("btm-hf");
  const ModelConfig m = test::small_model();
  const fs::path out = dir / "out" / "x.h5";
  fs::create_directories(out.parent_path());
  {  // wrong shape: c_attn in btm's [out, in] order instead of Conv1D's [in, out]
    auto t = hand_gpt2(m, "F32");
    t[4].shape = {24, 8};
    expect_refused(import(hand_model_dir(dir / "shape", m, t), out), out,
                   {"transformer.h.0.attn.c_attn.weight", "[24, 8]", "expected [8, 24]"});
  }
  {  // a missing tensor
    auto t = hand_gpt2(m, "F32");
    t.pop_back();
    expect_refused(import(hand_model_dir(dir / "missing", m, t), out), out,
                   {"missing tensor 'transformer.ln_f.bias'"});
  }
  {  // a dtype safetensors does not have, and one btm does not convert
    auto t = hand_gpt2(m, "F32");
    t[3].dtype = "F7";
    expect_refused(import(hand_model_dir(dir / "dtype", m, t), out), out,
                   {"transformer.h.0.ln_1.bias", "unknown dtype 'F7'"});
    t = hand_gpt2(m, "F32");
    t[3].dtype = "I32";
    expect_refused(import(hand_model_dir(dir / "int", m, t), out), out,
                   {"transformer.h.0.ln_1.bias", "has dtype I32", "F32, F16 or BF16"});
  }
  {  // a truncated file
    const fs::path hf = hand_model_dir(dir / "truncated", m, hand_gpt2(m, "F32"));
    fs::resize_file(hf / "model.safetensors", fs::file_size(hf / "model.safetensors") - 10);
    expect_refused(import(hf, out), out, {"transformer.ln_f.bias", "truncated"});
  }
  {  // config and weights of different shapes: an extra layer's tensors
    ModelConfig two = m;
    two.n_layer = 2;
    const fs::path hf = hand_model_dir(dir / "extra", m, hand_gpt2(two, "F32"));
    expect_refused(import(hf, out), out, {"unexpected tensor 'transformer.h.1."});
  }
  {  // an untied head
    auto t = hand_gpt2(m, "F32");
    HandTensor head = t[0];
    head.name = "lm_head.weight";
    head.values[3] += 1;
    t.push_back(head);
    expect_refused(import(hand_model_dir(dir / "untied", m, t), out), out,
                   {"lm_head.weight", "ties"});
  }
  {  // a config btm's engines cannot compute exactly
    const fs::path hf = hand_model_dir(dir / "relu", m, hand_gpt2(m, "F32"));
    write_hand_config(hf, m, ", \"activation_function\": \"relu\"");
    expect_refused(import(hf, out), out, {"activation_function", "gelu_new"});
  }
  {  // the configuration of the run disagrees with the model's shape
    const fs::path hf = hand_model_dir(dir / "config", m, hand_gpt2(m, "F32"));
    expect_refused(import(hf, out, "--model.n_layer 3"), out,
                   {"model.n_layer = 3 (the model has 1)"});
  }
  {  // a corpus of another vocabulary (bytes: 257 ids; the model has 20)
    test::write_synthetic_corpus(dir / "corpus", "a", 1, 2000);
    const fs::path hf = hand_model_dir(dir / "vocab", m, hand_gpt2(m, "F32"));
    expect_refused(import(hf, out, "--data.corpus " + (dir / "corpus").string()), out,
                   {"a.h5", "byte (257 ids)", "vocabulary of 20 ids"});
  }
}

// ---- export -----------------------------------------------------------------------------

// A forest directory holding the given checkpoints as trained ELMs.
void write_forest(const fs::path& run, const std::vector<Checkpoint>& models) {
  fs::create_directories(run / "elms");
  Forest f;
  for (const Checkpoint& c : models) {
    save_checkpoint(checkpoint_file(run, c.name), c);
    ModelRecord r;
    r.name = c.name;
    r.domains = {c.name};
    r.status = ModelStatus::trained;
    r.steps = c.step;
    r.checkpoint = fs::path("elms") / (c.name + ".h5");
    f.upsert(r);
  }
  save_forest(run, f);
}

Checkpoint random_model(const ModelConfig& m, const std::string& name, std::uint64_t seed) {
  Checkpoint c;
  c.name = name;
  c.model = m;
  const ParamLayout layout(m);
  c.params.resize(layout.total());
  init_gpt2(layout, c.params, seed);
  Rng rng(seed);
  // Biases and LayerNorms off 0 and 1; wte's padded rows [V, Vp) stay zero, as btm keeps them.
  const std::size_t real = static_cast<std::size_t>(m.vocab_size * m.d_model);
  for (std::size_t i = 0; i < c.params.size(); ++i)
    if (i < real || i >= layout.wpe()) c.params[i] += static_cast<float>(0.1 * rng.normal());
  c.adam_m.assign(c.params.size(), 0.0f);
  c.adam_v.assign(c.params.size(), 0.0f);
  return c;
}

struct ParsedFile {
  nlohmann::json header;
  std::string data;
};

// Parses a safetensors file by hand and checks the format: header length, 8-byte aligned data,
// every tensor's offsets contiguous from 0 to the end of the file, sized by shape and dtype.
ParsedFile parse_safetensors(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ParsedFile p;
  std::uint64_t n = 0;
  EXPECT_GE(bytes.size(), 8u);
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_LE(8 + n, bytes.size());
  EXPECT_EQ((8 + n) % 8, 0u);
  p.header = nlohmann::json::parse(bytes.substr(8, n));
  p.data = bytes.substr(8 + n);
  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  for (const auto& [name, e] : p.header.items()) {
    if (name == "__metadata__") continue;
    std::size_t count = 1;
    for (std::size_t d : e["shape"].get<std::vector<std::size_t>>()) count *= d;
    const std::size_t width = e["dtype"] == "F32" ? 4 : 2;
    const auto off = e["data_offsets"].get<std::vector<std::size_t>>();
    EXPECT_EQ(off[1] - off[0], count * width) << name;
    ranges.emplace_back(off[0], off[1]);
  }
  std::sort(ranges.begin(), ranges.end());
  std::size_t at = 0;
  for (const auto& [b, e] : ranges) {
    EXPECT_EQ(b, at);
    at = e;
  }
  EXPECT_EQ(at, p.data.size());
  return p;
}

std::vector<float> tensor_f32(const ParsedFile& p, const std::string& name) {
  const auto off = p.header[name]["data_offsets"].get<std::vector<std::size_t>>();
  std::vector<float> v;
  if (p.header[name]["dtype"] == "F32") {
    v.resize((off[1] - off[0]) / 4);
    std::memcpy(v.data(), p.data.data() + off[0], off[1] - off[0]);
  } else {
    for (std::size_t i = off[0]; i < off[1]; i += 2) {
      std::uint32_t u = 0;
      std::memcpy(reinterpret_cast<char*>(&u) + 2, p.data.data() + i, 2);
      float f;
      std::memcpy(&f, &u, 4);
      v.push_back(f);
    }
  }
  return v;
}

float bf16_round(float x) {  // round to nearest even, the independent reference
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  const std::uint32_t lower = u & 0xFFFF, upper = u >> 16;
  std::uint32_t r = upper + (lower > 0x8000 || (lower == 0x8000 && (upper & 1)) ? 1 : 0);
  r <<= 16;
  float f;
  std::memcpy(&f, &r, 4);
  return f;
}

TEST(HfExport, WritesHfLayoutAndRoundTripsThroughImportBitForBit) {
  test::TempDir dir("btm-hf");
  ModelConfig m = test::small_model();
  m.n_layer = 2;
  const Checkpoint a = random_model(m, "a", 11);
  write_forest(dir / "run", {a});
  const fs::path out = dir / "hf-a";
  auto r = test::run_btm("export --run.dir " + (dir / "run").string() + " --model a --out " +
                         out.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("no tokenizer files written"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out / "vocab.json"));

  const ParsedFile p = parse_safetensors(out / "model.safetensors");
  EXPECT_EQ(p.header["__metadata__"]["format"], "pt");
  EXPECT_EQ(p.header["__metadata__"]["btm_model"], "a");
  const auto names = hand_gpt2(m, "F32");  // the names and shapes HF expects
  EXPECT_EQ(p.header.size(), names.size() + 1);
  for (const HandTensor& t : names) {
    ASSERT_TRUE(p.header.contains(t.name)) << t.name;
    EXPECT_EQ(p.header[t.name]["dtype"], "F32");
    EXPECT_EQ(p.header[t.name]["shape"].get<std::vector<std::size_t>>(), t.shape) << t.name;
  }
  // The Conv1D transpose of one weight, by hand: HF [in, out] (i, o) = btm [out, in] (o, i).
  const ParamLayout layout(m);
  const auto fc = tensor_f32(p, "transformer.h.1.mlp.c_fc.weight");  // [8, 32]
  for (std::size_t o = 0; o < 32; ++o)
    for (std::size_t i = 0; i < 8; ++i)
      ASSERT_EQ(fc[i * 32 + o], a.params[layout.block(1).fc_w + o * 8 + i]);
  const auto wte = tensor_f32(p, "transformer.wte.weight");  // the real 20 rows only
  EXPECT_EQ(wte, std::vector<float>(a.params.begin(), a.params.begin() + 20 * 8));

  std::ifstream config_file(out / "config.json");
  const auto config = nlohmann::json::parse(config_file);
  EXPECT_EQ(config["architectures"][0], "GPT2LMHeadModel");
  EXPECT_EQ(config["n_positions"], 4);
  EXPECT_EQ(config["n_ctx"], 4);
  EXPECT_EQ(config["n_embd"], 8);
  EXPECT_EQ(config["n_layer"], 2);
  EXPECT_EQ(config["n_head"], 2);
  EXPECT_EQ(config["vocab_size"], 20);
  EXPECT_EQ(config["tie_word_embeddings"], true);

  r = import(out, dir / "back.h5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(load_checkpoint(dir / "back.h5", &m).params, a.params);  // bit for bit

  // bf16: each value rounded to nearest even; import gives those values back.
  r = test::run_btm("export --run.dir " + (dir / "run").string() +
                    " --model a --dtype bf16 --out " + (dir / "hf-bf16").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const ParsedFile b = parse_safetensors(dir / "hf-bf16" / "model.safetensors");
  EXPECT_EQ(b.header["transformer.wpe.weight"]["dtype"], "BF16");
  r = import(dir / "hf-bf16", dir / "bf16.h5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<float> rounded = a.params;
  for (float& x : rounded) x = bf16_round(x);
  EXPECT_EQ(load_checkpoint(dir / "bf16.h5", &m).params, rounded);

  // An existing directory is kept unless --force; nothing half-written is left.
  r = test::run_btm("export --run.dir " + (dir / "run").string() + " --model a --out " +
                    out.string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--force"), std::string::npos) << r.output;
  r = test::run_btm("export --run.dir " + (dir / "run").string() + " --model nope --out " +
                    (dir / "nope").string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("no such model"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "nope"));
  for (const auto& entry : fs::directory_iterator(dir.path()))
    EXPECT_EQ(entry.path().string().find(".tmp"), std::string::npos) << entry.path();
}

TEST(HfExport, AnAverageOfElmsWithTheirWeights) {
  test::TempDir dir("btm-hf");
  const ModelConfig m = test::small_model();
  const Checkpoint a = random_model(m, "a", 1), b = random_model(m, "b", 2);
  write_forest(dir / "run", {a, b});
  const auto r = test::run_btm("export --run.dir " + (dir / "run").string() +
                               " --parents a,b --weights 1,3 --out " + (dir / "avg").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const ParsedFile p = parse_safetensors(dir / "avg" / "model.safetensors");
  EXPECT_EQ(p.header["__metadata__"]["btm_parents"], "a,b");
  const auto ln = tensor_f32(p, "transformer.ln_f.bias");
  const std::size_t at = ParamLayout(m).lnf_b();
  for (std::size_t i = 0; i < ln.size(); ++i)
    EXPECT_NEAR(ln[i], 0.25 * a.params[at + i] + 0.75 * b.params[at + i], 1e-6);
}

TEST(HfExport, Gpt2VocabularyGetsTheTokenizerFiles) {
  test::TempDir dir("btm-hf");
  ModelConfig m = test::small_model();
  m.vocab_size = 50257;
  write_forest(dir / "run", {random_model(m, "g", 3)});
  const auto r =
      test::run_btm("export --run.dir " + (dir / "run").string() + " --model g --out " +
                    (dir / "hf").string() + " --bpe-dir " + test::source_dir() + "/data/gpt2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto slurp = [](const fs::path& f) {
    std::ifstream in(f, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  const fs::path gpt2 = fs::path(test::source_dir()) / "data" / "gpt2";
  EXPECT_EQ(slurp(dir / "hf" / "vocab.json"), slurp(gpt2 / "encoder.json"));
  EXPECT_EQ(slurp(dir / "hf" / "merges.txt"), slurp(gpt2 / "vocab.bpe"));
  const auto tc = nlohmann::json::parse(slurp(dir / "hf" / "tokenizer_config.json"));
  EXPECT_EQ(tc["model_max_length"], 4);
  EXPECT_EQ(tc["eos_token"], "<|endoftext|>");
  EXPECT_TRUE(fs::exists(dir / "hf" / "special_tokens_map.json"));
  const auto config = nlohmann::json::parse(slurp(dir / "hf" / "config.json"));
  EXPECT_EQ(config["vocab_size"], 50257);  // not the padded 50264
  EXPECT_EQ(config["eos_token_id"], 50256);
}

// A forest from a trained run: export --prior DOMAIN is the average under eval.h5's cached
// prior of that domain.
TEST(HfExport, ACachedPriorAverage) {
  test::TempDir dir("btm-hf");
  test::write_synthetic_corpus(dir / "corpus", "a", 1, 3000);
  test::write_synthetic_corpus(dir / "corpus", "b", 2, 3000);
  const std::string run = (dir / "run").string();
  auto r = test::run_btm(
      "run --data.corpus " + (dir / "corpus").string() + " --data.domains a,b --run.dir " + run +
      " --model.n_layer 1 --model.d_model 16 --model.n_head 2 --model.context 8 --run.steps 4 "
      "--run.threads 1 --run.device cpu --run.dense false --eval.blocks 2 --eval.prior_blocks 2 "
      "--eval.prior_batch 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_btm("export --run.dir " + run + " --prior b --out " + (dir / "hf").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const EvalResults e = read_eval_file(dir / "run" / "eval.h5");
  ASSERT_EQ(e.elms, (std::vector<std::string>{"a", "b"}));
  const double wa = e.priors[2], wb = e.priors[3];  // domain b's row
  const ParsedFile p = parse_safetensors(dir / "hf" / "model.safetensors");
  EXPECT_EQ(p.header["__metadata__"]["btm_prior"], "b");
  const Checkpoint ca = load_checkpoint(dir / "run" / "elms" / "a.h5");
  const Checkpoint cb = load_checkpoint(dir / "run" / "elms" / "b.h5");
  const auto wpe = tensor_f32(p, "transformer.wpe.weight");
  const std::size_t at = ParamLayout(ca.model).wpe();
  for (std::size_t i = 0; i < wpe.size(); ++i)
    EXPECT_NEAR(wpe[i], (wa * ca.params[at + i] + wb * cb.params[at + i]) / (wa + wb), 1e-6);
  r = test::run_btm("export --run.dir " + run + " --prior nowhere --out " + (dir / "x").string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("no cached prior"), std::string::npos) << r.output;
}

// ---- a pretrained seed ------------------------------------------------------------------

// An imported model as run.seed_checkpoint: the ELMs branch from its weights; with
// run.elm_schedule = fresh each trains run.steps x (1 - seed_share) steps from step 0 of a
// schedule of its own, and the dense baseline starts from it too; with continue the ELMs continue
// the (empty) step count of the checkpoint and the dense baseline starts from scratch. A seed of
// another vocabulary than the corpus is refused.
TEST(HfImport, ImportedSeedStartsTheForest) {
  test::TempDir dir("btm-hf");
  test::write_synthetic_corpus(dir / "corpus", "a", 1, 3000);
  ModelConfig m;
  m.n_layer = 1;
  m.n_head = 2;
  m.d_model = 16;
  m.context = 8;
  m.vocab_size = 257;
  m.vocab_multiple = 8;
  const fs::path hf = hand_model_dir(dir / "hf", m, hand_gpt2(m, "F32"));
  ASSERT_EQ(import(hf, dir / "seed.h5").exit_code, 0);
  const std::string common =
      "--data.corpus " + (dir / "corpus").string() +
      " --data.domains a --model.n_layer 1 --model.d_model 16 --model.n_head 2 "
      "--model.context 8 --model.vocab_multiple 8 --run.steps 4 --run.seed_share 0.5 "
      "--run.threads 1 --run.device cpu --no-eval --run.seed_checkpoint " +
      dir.path().string() + "/seed";
  for (const std::string schedule : {"fresh", "continue"}) {
    const fs::path run = dir / ("run-" + schedule);
    const auto r = test::run_btm("run " + common + ".h5 --run.elm_schedule " + schedule +
                                 " --run.dir " + run.string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const CheckpointInfo elm = peek_checkpoint(run / "elms" / "a.h5");
    const std::int64_t steps = schedule == "fresh" ? 2 : 4;
    EXPECT_EQ(elm.step, steps) << schedule;
    EXPECT_EQ(elm.schedule_steps, steps) << schedule;
    EXPECT_EQ(load_checkpoint(run / "elms" / "seed.h5").params,
              load_checkpoint(dir / "seed.h5").params);
    // The dense baseline starts from the pretrained seed too where the ELMs restart.
    const Forest f = load_forest(run);
    ASSERT_NE(f.find("dense"), nullptr);
    EXPECT_EQ(f.find("dense")->steps, 4);
    EXPECT_EQ(f.find("dense")->parents,
              schedule == "fresh" ? std::vector<std::string>{"seed"} : std::vector<std::string>{});
  }
  // The same model with 300 ids against the byte corpus's 257.
  m.vocab_size = 300;
  const fs::path big = hand_model_dir(dir / "hf300", m, hand_gpt2(m, "F32"));
  ASSERT_EQ(import(big, dir / "seed300.h5").exit_code, 0);
  const auto r = test::run_btm("run " + common + "300.h5 --model.vocab_size 300 --run.dir " +
                               (dir / "run300").string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("tokenizer byte has 257 ids but model.vocab_size is 300"),
            std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace btm

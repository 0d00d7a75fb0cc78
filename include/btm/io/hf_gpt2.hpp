// hf_gpt2.hpp: a btm model as a Hugging Face transformers GPT2LMHeadModel directory, and back.
//   config.json        GPT2Config: n_layer, n_head, n_embd, n_positions = n_ctx = model.context,
//                      vocab_size = the real vocabulary (not padded), activation gelu_new,
//                      LayerNorm epsilon 1e-5, no dropout, tied embeddings
//   model.safetensors  transformer.wte.weight [V, C], transformer.wpe.weight [T, C],
//                      transformer.h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc,
//                      mlp.c_proj}.{weight, bias}, transformer.ln_f.{weight, bias}; the 2-D
//                      block weights in HF's Conv1D layout [in, out], the transpose of btm's
//                      [out, in] (params.hpp); lm_head.weight is wte (tied), not stored
// Reading accepts what transformers writes: names with or without "transformer.", F32, F16 or
// BF16 tensors, one file or shards (model.safetensors.index.json), the attention-mask buffers
// of older versions (ignored), and lm_head.weight when it equals wte.
#pragma once

#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "btm/config/config.hpp"
#include "btm/io/safetensors.hpp"
#include "btm/model/params.hpp"

namespace btm::hf {

// GPT-2's vocabulary: the ids of a model that reads GPT-2's tokenizer.
constexpr int kGpt2Vocab = 50257;

// "wte" -> "transformer.wte.weight", "h.0.ln_1.weight" -> "transformer.h.0.ln_1.weight".
std::string hf_name(const TensorSpec& tensor);
// True for the weights HF stores transposed (Conv1D: attn.c_attn, attn.c_proj, mlp.c_fc,
// mlp.c_proj).
bool is_conv1d(const TensorSpec& tensor);
// The tensor's shape in the HF file: [vocab_size, C] for wte, [in, out] for Conv1D weights.
std::vector<std::size_t> hf_shape(const TensorSpec& tensor, const ModelConfig& model);

// Writes config.json for `model` (torch_dtype from `dtype`).
void write_config(const std::filesystem::path& file, const ModelConfig& model,
                  safetensors::Dtype dtype);
// Writes model.safetensors: the flat btm `params` of `model` under HF's names and layout.
void write_weights(const std::filesystem::path& file, const ModelConfig& model,
                   std::span<const float> params, safetensors::Dtype dtype,
                   const std::map<std::string, std::string>& metadata);

// The model shape of DIR/config.json (a GPT-2 that btm's engines compute exactly), padding the
// vocabulary to `vocab_multiple`; InputError naming the key and what btm needs otherwise.
ModelConfig read_config(const std::filesystem::path& dir, int vocab_multiple);
// The weights of DIR (model.safetensors or its shards) as btm's flat fp32 vector for `model`:
// every tensor present with its shape, finite, nothing unexpected; InputError naming the file,
// the tensor and what was expected otherwise.
std::vector<float> read_weights(const std::filesystem::path& dir, const ModelConfig& model);

}  // namespace btm::hf

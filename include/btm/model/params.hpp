// params.hpp: the flat parameter layout of a GPT model (names, shapes, offsets of every tensor
// in ONE fp32 vector) and GPT-2 initialisation. The same order is used in memory on CPU and GPU
// and in the HDF5 checkpoint, so copying, averaging and checkpointing are operations on one
// vector. AdamW moments and gradients use the same layout.
//
// Order (weights are [out, in], as torch.nn.Linear):
//   wte [Vp, C]  token embedding, tied with the output head; rows >= vocab_size stay zero
//   wpe [T, C]   learned positions
//   for each layer l = 0..L-1, contiguous (so a layer's gradients can be reduced as one bucket):
//     h.l.ln_1.weight [C], h.l.ln_1.bias [C]
//     h.l.attn.c_attn.weight [3C, C], h.l.attn.c_attn.bias [3C]   (q, k, v stacked)
//     h.l.attn.c_proj.weight [C, C],  h.l.attn.c_proj.bias [C]
//     h.l.ln_2.weight [C], h.l.ln_2.bias [C]
//     h.l.mlp.c_fc.weight [4C, C],    h.l.mlp.c_fc.bias [4C]
//     h.l.mlp.c_proj.weight [C, 4C],  h.l.mlp.c_proj.bias [C]
//   ln_f.weight [C], ln_f.bias [C]
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "btm/config/config.hpp"

namespace btm {

struct TensorSpec {
  std::string name;
  std::vector<std::size_t> shape;
  std::size_t offset = 0;     // in floats from the start of the flat vector
  std::size_t size = 0;       // number of floats
  int layer = -1;             // block index, -1 for embeddings and ln_f
  bool weight_decay = false;  // 2-D weights decay, biases and LayerNorm parameters do not
};

// Offsets of one transformer block's tensors, all relative to the start of the flat vector.
struct BlockOffsets {
  std::size_t ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, fcproj_w,
      fcproj_b;
  std::size_t begin, end;  // the block's contiguous range
};

class ParamLayout {
 public:
  explicit ParamLayout(const ModelConfig& model);

  const ModelConfig& model() const { return model_; }
  const std::vector<TensorSpec>& tensors() const { return tensors_; }
  std::size_t total() const { return total_; }
  const TensorSpec& find(const std::string& name) const;  // throws if absent

  std::size_t wte() const { return wte_; }
  std::size_t wpe() const { return wpe_; }
  std::size_t lnf_w() const { return lnf_w_; }
  std::size_t lnf_b() const { return lnf_b_; }
  const BlockOffsets& block(int layer) const { return blocks_[static_cast<std::size_t>(layer)]; }

  // Number of parameters N used in the 6N FLOP count (no position embeddings, real vocab rows).
  std::size_t flop_params() const;

 private:
  ModelConfig model_;
  std::vector<TensorSpec> tensors_;
  std::vector<BlockOffsets> blocks_;
  std::size_t total_ = 0, wte_ = 0, wpe_ = 0, lnf_w_ = 0, lnf_b_ = 0;
};

// GPT-2 initialisation: weights N(0, 0.02), residual projections (attn.c_proj, mlp.c_proj)
// N(0, 0.02 / sqrt(2L)), biases 0, LayerNorm weight 1 and bias 0, padded vocab rows 0.
// Deterministic for a given seed on every platform (own RNG, no std::normal_distribution).
void init_gpt2(const ParamLayout& layout, std::span<float> params, std::uint64_t seed);

// Model FLOPs per token for training, the PaLM/nanoGPT convention: 6N + 12 L d T.
double train_flops_per_token(const ParamLayout& layout);
// Model FLOPs utilisation (llm.c, nanoGPT): tokens/s x FLOPs per token over `devices` devices of
// `peak_tflops` each; NaN where the peak is unknown (<= 0: the CPU).
double model_flops_utilization(double tokens_per_s, double flops_per_token, int devices,
                               double peak_tflops);

}  // namespace btm

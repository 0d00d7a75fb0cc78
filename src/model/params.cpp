#include "btm/model/params.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>

#include "btm/util/error.hpp"
#include "btm/util/rng.hpp"

namespace btm {

ParamLayout::ParamLayout(const ModelConfig& model) : model_(model) {
  const std::size_t C = static_cast<std::size_t>(model.d_model);
  const std::size_t Vp = static_cast<std::size_t>(model.padded_vocab());
  const std::size_t T = static_cast<std::size_t>(model.context);
  auto add = [&](std::string name, std::vector<std::size_t> shape, int layer) {
    std::size_t size = 1;
    for (std::size_t d : shape) size *= d;
    const bool decay = shape.size() == 2;
    tensors_.push_back({std::move(name), std::move(shape), total_, size, layer, decay});
    total_ += size;
    return tensors_.back().offset;
  };
  wte_ = add("wte", {Vp, C}, -1);
  wpe_ = add("wpe", {T, C}, -1);
  for (int l = 0; l < model.n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    BlockOffsets b{};
    b.begin = total_;
    b.ln1_w = add(p + "ln_1.weight", {C}, l);
    b.ln1_b = add(p + "ln_1.bias", {C}, l);
    b.qkv_w = add(p + "attn.c_attn.weight", {3 * C, C}, l);
    b.qkv_b = add(p + "attn.c_attn.bias", {3 * C}, l);
    b.proj_w = add(p + "attn.c_proj.weight", {C, C}, l);
    b.proj_b = add(p + "attn.c_proj.bias", {C}, l);
    b.ln2_w = add(p + "ln_2.weight", {C}, l);
    b.ln2_b = add(p + "ln_2.bias", {C}, l);
    b.fc_w = add(p + "mlp.c_fc.weight", {4 * C, C}, l);
    b.fc_b = add(p + "mlp.c_fc.bias", {4 * C}, l);
    b.fcproj_w = add(p + "mlp.c_proj.weight", {C, 4 * C}, l);
    b.fcproj_b = add(p + "mlp.c_proj.bias", {C}, l);
    b.end = total_;
    blocks_.push_back(b);
  }
  lnf_w_ = add("ln_f.weight", {C}, -1);
  lnf_b_ = add("ln_f.bias", {C}, -1);
}

const TensorSpec& ParamLayout::find(const std::string& name) const {
  for (const TensorSpec& t : tensors_)
    if (t.name == name) return t;
  throw std::out_of_range("no parameter tensor named '" + name + "'");
}

std::size_t ParamLayout::flop_params() const {
  const std::size_t C = static_cast<std::size_t>(model_.d_model);
  const std::size_t unused_rows =
      static_cast<std::size_t>(model_.padded_vocab() - model_.vocab_size);
  return total_ - static_cast<std::size_t>(model_.context) * C - unused_rows * C;
}

double train_flops_per_token(const ParamLayout& layout) {
  const ModelConfig& m = layout.model();
  return 6.0 * static_cast<double>(layout.flop_params()) +
         12.0 * m.n_layer * m.d_model * static_cast<double>(m.context);
}

double model_flops_utilization(double tokens_per_s, double flops_per_token, int devices,
                               double peak_tflops) {
  if (!(peak_tflops > 0) || devices < 1) return std::numeric_limits<double>::quiet_NaN();
  return tokens_per_s * flops_per_token / (devices * peak_tflops * 1e12);
}

void init_gpt2(const ParamLayout& layout, std::span<float> params, std::uint64_t seed) {
  if (params.size() != layout.total())
    throw std::invalid_argument("init_gpt2: parameter vector has the wrong size");
  const ModelConfig& m = layout.model();
  const double residual_std = 0.02 / std::sqrt(2.0 * m.n_layer);
  // One thread per tensor: the same values on any thread count.
  const std::size_t tensors = layout.tensors().size();
#pragma omp parallel for schedule(dynamic)
  for (std::size_t k = 0; k < tensors; ++k) {
    const TensorSpec& t = layout.tensors()[k];
    float* p = params.data() + t.offset;
    // Each tensor draws from its own stream, so adding a tensor never shifts the others.
    Rng rng(mix64(seed ^ mix64(k + 1)));
    const bool is_ln_weight =
        t.name.find("ln_") != std::string::npos && t.name.ends_with(".weight");
    if (t.shape.size() == 1) {
      for (std::size_t i = 0; i < t.size; ++i) p[i] = is_ln_weight ? 1.0f : 0.0f;
      continue;
    }
    const bool residual =
        t.name.ends_with("attn.c_proj.weight") || t.name.ends_with("mlp.c_proj.weight");
    const double std = residual ? residual_std : 0.02;
    for (std::size_t i = 0; i < t.size; ++i) p[i] = static_cast<float>(std * rng.normal());
    if (t.name == "wte") {  // padded vocab rows are never used: keep them zero
      const std::size_t C = static_cast<std::size_t>(m.d_model);
      for (std::size_t i = static_cast<std::size_t>(m.vocab_size) * C; i < t.size; ++i) p[i] = 0;
    }
  }
}

}  // namespace btm

#include "btm/model/engine.hpp"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "btm/util/error.hpp"

namespace btm {

void check_batch(const Batch& batch, bool need_targets, const ModelConfig& model, int max_batch,
                 const std::string& engine) {
  const bool b_ok = batch.B >= 1 && (max_batch == 0 || batch.B <= max_batch);
  if (!b_ok || batch.T < 1 || batch.T > model.context)
    throw std::invalid_argument(
        engine + " engine: batch of B=" + std::to_string(batch.B) +
        ", T=" + std::to_string(batch.T) + " needs " +
        (max_batch == 0 ? std::string("B >= 1")
                        : "1 <= B <= " + std::to_string(max_batch) + " (max_batch)") +
        " and 1 <= T <= " + std::to_string(model.context) + " (the model's context)");
  if (batch.inputs == nullptr || (need_targets && batch.targets == nullptr))
    throw std::invalid_argument(engine + " engine: batch without inputs or targets");
  const std::size_t BT = static_cast<std::size_t>(batch.B) * batch.T;
  auto check_tokens = [&](const std::int32_t* tokens, const char* what) {
    for (std::size_t i = 0; i < BT; ++i)
      if (tokens[i] < 0 || tokens[i] >= model.vocab_size)
        throw InputError(std::string("token id ") + std::to_string(tokens[i]) + " in the " + what +
                         " is outside the model's vocabulary [0, " +
                         std::to_string(model.vocab_size) +
                         "): tokenize the corpus with the tokenizer of this model");
  };
  check_tokens(batch.inputs, "inputs");
  if (need_targets) check_tokens(batch.targets, "targets");
}

bool Engine::keep_state() {
  const std::size_t n = layout().total();
  kept_params_.resize(n);
  kept_m_.resize(n);
  kept_v_.resize(n);
  get_state(kept_params_, kept_m_, kept_v_);
  return true;
}

void Engine::restore_state() {
  if (kept_params_.empty()) throw std::logic_error("restore_state: no state is kept");
  set_state(kept_params_, kept_m_, kept_v_);
}

void Engine::drop_state() {
  kept_params_ = {};
  kept_m_ = {};
  kept_v_ = {};
}

void Engine::hold_parent(std::size_t j, std::vector<float> params) {
  if (params.size() != layout().total())
    throw std::invalid_argument("hold_parent: parent " + std::to_string(j) + " has " +
                                std::to_string(params.size()) + " parameters, the layout " +
                                std::to_string(layout().total()));
  held_parents_[j] = std::move(params);
}

void Engine::drop_parents() {
  held_parents_.clear();
}

void Engine::add_parents(std::span<const double> weights, fixed::Sum& sum) {
  for (const auto& [j, params] : held_parents_)
    if (j < weights.size() && weights[j] != 0) sum.add(params, weights[j]);
}

void Engine::set_params_to_average(std::span<const double> weights) {
  for (std::size_t j = 0; j < weights.size(); ++j)
    if (weights[j] != 0 && !held_parents_.contains(j))
      throw std::logic_error("set_params_to_average: parent " + std::to_string(j) +
                             " has a weight but is not held");
  set_params_to_sum_of_parents(weights);
}

void Engine::set_params_to_sum_of_parents(std::span<const double> weights) {
  fixed::Sum sum = fixed::Sum::for_weights(layout().total(), weights);
  add_parents(weights, sum);
  if (sum.bad() > 0)
    throw std::runtime_error(
        "set_params_to_average: a parent parameter is outside the fixed-point "
        "range (|w * x| > 2^23): not a trained model");
  set_params(sum.result());
}

void Engine::start_decode(int B, int capacity, int max_batch, const std::string& engine) {
  const ModelConfig& model = layout().model();
  if (B < 1 || (max_batch > 0 && B > max_batch))
    throw std::invalid_argument(
        engine + " engine: decoding " + std::to_string(B) + " sequences needs 1 <= B <= " +
        (max_batch > 0 ? std::to_string(max_batch) + " (max_batch)" : std::string("any")));
  if (capacity < 1 || capacity > model.context)
    throw InputError(engine + " engine: a decoding capacity of " + std::to_string(capacity) +
                     " tokens is outside [1, " + std::to_string(model.context) +
                     "] (model.context: the model has no position embedding past it)");
  decode_batch_ = B;
  decode_capacity_ = capacity;
  decode_length_ = 0;
}

int Engine::advance_decode(int n, const std::string& engine) {
  if (decode_batch_ == 0) throw std::logic_error(engine + " engine: decode before begin_decode");
  if (n < 1) throw std::invalid_argument(engine + " engine: decode needs at least one token");
  if (n > decode_capacity_ - decode_length_)
    throw InputError(engine + " engine: " + std::to_string(n) + " more tokens would make " +
                     std::to_string(decode_length_ + n) + ", past the capacity of " +
                     std::to_string(decode_capacity_) +
                     " (at most model.context = " + std::to_string(layout().model().context) + ")");
  const int first = decode_length_;
  decode_length_ += n;
  return first;
}

void Engine::begin_decode(int B, int capacity) {
  start_decode(B, capacity, 0, kind());
  decode_tokens_.assign(static_cast<std::size_t>(B) * static_cast<std::size_t>(capacity), 0);
}

void Engine::decode(const std::int32_t* tokens, int n, float* out) {
  const int B = decode_batch(), cap = decode_capacity_;
  const int first = advance_decode(n, kind());
  const int T = first + n;
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < n; ++i)
      decode_tokens_[static_cast<std::size_t>(b) * cap + static_cast<std::size_t>(first + i)] =
          tokens[static_cast<std::size_t>(b) * n + static_cast<std::size_t>(i)];
  std::vector<std::int32_t> inputs(static_cast<std::size_t>(B) * T);
  for (int b = 0; b < B; ++b)
    std::copy_n(decode_tokens_.begin() + static_cast<std::ptrdiff_t>(b) * cap, T,
                inputs.begin() + static_cast<std::ptrdiff_t>(b) * T);
  const std::size_t Vp = static_cast<std::size_t>(layout().model().padded_vocab());
  std::vector<float> all(static_cast<std::size_t>(B) * T * Vp);
  logits({inputs.data(), nullptr, B, T}, all.data());
  for (int b = 0; b < B; ++b)
    std::copy_n(
        all.begin() + static_cast<std::ptrdiff_t>(
                          (static_cast<std::size_t>(b) * T + static_cast<std::size_t>(first)) * Vp),
        static_cast<std::size_t>(n) * Vp, out + static_cast<std::size_t>(b) * n * Vp);
}

}  // namespace btm

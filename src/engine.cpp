#include "btm/engine.hpp"

#include <stdexcept>

#include "btm/error.hpp"

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

}  // namespace btm

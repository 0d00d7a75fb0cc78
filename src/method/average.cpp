#include "btm/method/average.hpp"

#include <cmath>

#include "btm/method/ensemble.hpp"
#include "btm/model/params.hpp"
#include "btm/util/error.hpp"
#include "btm/util/fixed_point.hpp"

namespace btm {

Checkpoint averaged_attributes(const std::vector<std::filesystem::path>& parents,
                               std::span<const double> weights, const ModelConfig& model) {
  if (parents.empty()) throw InputError("parameter averaging: no parent given");
  if (weights.size() != parents.size())
    throw InputError("parameter averaging: " + std::to_string(weights.size()) + " weights for " +
                     std::to_string(parents.size()) + " parents: give one weight per parent");
  ensemble::check_distribution(weights, "the averaging weights");
  Checkpoint out;
  static_cast<CheckpointInfo&>(out) = peek_checkpoint(parents[0]);
  out.domains.clear();
  double tokens = 0;
  for (std::size_t j = 0; j < parents.size(); ++j) {
    const CheckpointInfo p = peek_checkpoint(parents[j]);
    if (!(p.model == model))
      throw InputError(parents[j].string() +
                       ": its model shape differs from the configured one: only models of one "
                       "shape can be averaged");
    tokens += weights[j] * static_cast<double>(p.tokens);
    out.domains.insert(out.domains.end(), p.domains.begin(), p.domains.end());
  }
  out.tokens = static_cast<std::uint64_t>(std::llround(tokens));
  return out;
}

Checkpoint average_checkpoints(const std::vector<std::filesystem::path>& parents,
                               std::span<const double> weights, const ModelConfig& model,
                               bool with_optimizer) {
  // The first parent's attributes; then one state vector at a time over all parents, so at
  // most one sum and one parent's vector are in memory.
  Checkpoint out = averaged_attributes(parents, weights, model);
  const std::size_t n = ParamLayout(model).total();
  const std::pair<const char*, std::vector<float>*> vectors[] = {
      {"params", &out.params}, {"adam_m", &out.adam_m}, {"adam_v", &out.adam_v}};
  for (const auto& [name, result_ptr] : vectors) {
    std::vector<float>& result = *result_ptr;
    if (!with_optimizer && result_ptr != &out.params) {
      result.assign(n, 0.0f);
      continue;
    }
    fixed::Sum sum = fixed::Sum::for_weights(n, weights);
    for (std::size_t j = 0; j < parents.size(); ++j)
      if (weights[j] != 0) sum.add(load_state_vector(parents[j], name, model), weights[j]);
    if (sum.bad() > 0)
      throw InputError("parameter averaging: a parent's /" + std::string(name) +
                       " holds a value outside the fixed-point range (|w x| > 2^23)");
    result = sum.result();
  }
  return out;
}

}  // namespace btm

#include "btm/pipeline/validation.hpp"

#include "btm/util/error.hpp"

namespace btm {

std::vector<std::int64_t> Validation::tokens() const {
  std::vector<std::int64_t> out;
  for (const BlockSet& s : sets) out.push_back(static_cast<std::int64_t>(s.blocks) * T);
  return out;
}

Validation plan_validation(const std::vector<std::string>& domains,
                           const std::vector<DomainCorpus>& corpora, int T, std::int64_t blocks) {
  Validation v;
  v.T = T;
  if (blocks <= 0) return v;
  for (std::size_t k = 0; k < domains.size(); ++k) {
    const TokenArray& valid = corpora[k].split(Split::Valid);
    const std::size_t n = usable_blocks(valid, T, blocks);
    if (n == 0)
      throw InputError(
          "domain '" + domains[k] + "': its valid split has " + std::to_string(valid.size()) +
          " tokens, fewer than one block of model.context + 1 = " + std::to_string(T + 1) +
          ": prepare the domain with more text, or train without validation "
          "(run.eval_blocks 0)");
    v.domains.push_back(domains[k]);
    v.sets.push_back({&valid, n});
  }
  return v;
}

std::vector<double> validation_loss(Engine& engine, MpiComm& group, const Validation& v,
                                    int batch) {
  const auto T = static_cast<std::size_t>(v.T);
  std::size_t total = 0;
  for (const BlockSet& s : v.sets) total += s.blocks * T;
  // Each entry is written by one rank, the others hold zeros: the sum over the group is exact.
  std::vector<float> logprobs(total, 0.0f);
  std::size_t offset = 0;
  for (const BlockSet& s : v.sets) {
    score_blocks(engine, s, v.T, batch, group, logprobs.data() + offset);
    offset += s.blocks * T;
  }
  if (group.size() > 1) group.allreduce_sum(logprobs.data(), logprobs.size());
  std::vector<double> loss;
  offset = 0;
  for (const BlockSet& s : v.sets) {
    double sum = 0;
    const std::size_t n = s.blocks * T;
    for (std::size_t i = 0; i < n; ++i) sum += logprobs[offset + i];
    loss.push_back(-sum / static_cast<double>(n));
    offset += n;
  }
  return loss;
}

}  // namespace btm

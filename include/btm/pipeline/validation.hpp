// validation.hpp: a model's perplexity on the validation splits while it trains
// (run.eval_every, run.eval_blocks: budget.hpp has the steps): the first run.eval_blocks blocks
// of the valid split of each domain the model trains on (an ELM: its own; the seed and the
// dense baseline: every train domain). Computed inside the training group only: its ranks split
// the blocks (pipeline/blocks) and sum them over the group, so the numbers are the same bits on
// any rank count, and nothing the training depends on (sampler, RNG, optimizer) is touched.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "btm/data/corpus.hpp"
#include "btm/dist/comm.hpp"
#include "btm/model/engine.hpp"
#include "btm/pipeline/blocks.hpp"

namespace btm {

struct Validation {
  std::vector<std::string> domains;
  std::vector<BlockSet> sets;  // [domain], pointing into the caller's corpora
  int T = 0;
  std::vector<std::int64_t> tokens() const;  // [domain] tokens scored: blocks x T
  bool empty() const { return domains.empty(); }
};

// The validation of a model training on `domains` (corpora[k] is domains[k]'s): up to `blocks`
// blocks of each valid split (blocks = 0: none, an empty Validation). InputError naming the
// domain where its valid split holds no block.
Validation plan_validation(const std::vector<std::string>& domains,
                           const std::vector<DomainCorpus>& corpora, int T, std::int64_t blocks);

// The mean loss per token (nats) on each domain of `v` of the model in `engine`, the same on
// every rank of `group` (collective over it). Blocks go through the engine in chunks of `batch`.
std::vector<double> validation_loss(Engine& engine, MpiComm& group, const Validation& v, int batch);

}  // namespace btm

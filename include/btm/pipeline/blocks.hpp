// blocks.hpp: the scored blocks of a split, shared by the validation during training
// (pipeline/validation) and the evaluation phase (eval/): the first non-overlapping blocks of
// the context length, and their per-token log-probabilities computed by a group of ranks, every
// number from the same computation whatever the rank count.
#pragma once

#include <cstddef>
#include <cstdint>

#include "btm/data/corpus.hpp"
#include "btm/dist/comm.hpp"
#include "btm/model/engine.hpp"

namespace btm {

// The blocks scored on one split of one domain: the first `blocks` non-overlapping blocks of
// the context length (inputs t, targets t+1).
struct BlockSet {
  const TokenArray* tokens = nullptr;
  std::size_t blocks = 0;
};

// The blocks of T + 1 tokens `tokens` holds, at most `limit` (0: no limit); the same for an
// array of `count` tokens.
std::size_t usable_blocks(const TokenArray& tokens, int T, std::int64_t limit);
std::size_t usable_blocks(std::size_t count, int T, std::int64_t limit);

// Log-probabilities of the model loaded in `engine` on `set`, written to out[block * T + t].
// Blocks go through the engine in fixed chunks of `batch` blocks; chunk c is scored by group
// rank c % size, so every number comes from the same computation whatever the rank count.
// Entries of chunks scored by other ranks are left untouched (zero).
void score_blocks(Engine& engine, const BlockSet& set, int T, int batch, const MpiComm& group,
                  float* out);

}  // namespace btm

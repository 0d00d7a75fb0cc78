#include "btm/pipeline/blocks.hpp"

#include <algorithm>
#include <vector>

namespace btm {

std::size_t usable_blocks(std::size_t count, int T, std::int64_t limit) {
  const std::size_t available = count > 0 ? (count - 1) / static_cast<std::size_t>(T) : 0;
  return limit > 0 ? std::min(available, static_cast<std::size_t>(limit)) : available;
}

std::size_t usable_blocks(const TokenArray& tokens, int T, std::int64_t limit) {
  return usable_blocks(tokens.size(), T, limit);
}

void score_blocks(Engine& engine, const BlockSet& set, int T, int batch, const MpiComm& group,
                  float* out) {
  std::vector<std::int32_t> inputs(static_cast<std::size_t>(batch) * T), targets(inputs.size());
  const std::size_t chunks =
      (set.blocks + static_cast<std::size_t>(batch) - 1) / static_cast<std::size_t>(batch);
  for (std::size_t c = static_cast<std::size_t>(group.rank()); c < chunks;
       c += static_cast<std::size_t>(group.size())) {
    const std::size_t first = c * static_cast<std::size_t>(batch);
    const int count = static_cast<int>(
        std::min<std::size_t>(static_cast<std::size_t>(batch), set.blocks - first));
    for (int b = 0; b < count; ++b) {
      const std::uint16_t* tokens = set.tokens->data() + (first + static_cast<std::size_t>(b)) * T;
      for (int t = 0; t < T; ++t) {
        inputs[static_cast<std::size_t>(b) * T + t] = tokens[t];
        targets[static_cast<std::size_t>(b) * T + t] = tokens[t + 1];
      }
    }
    engine.token_logprobs({inputs.data(), targets.data(), count, T}, out + first * T);
  }
}

}  // namespace btm

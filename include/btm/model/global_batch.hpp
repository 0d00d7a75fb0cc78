// global_batch.hpp: a model's global batch: micro_batches micro-batches of micro_batch
// sequences per optimizer step (the compute rule that sets it: method/budget.hpp).
#pragma once

#include <cstdint>

namespace btm {

struct GlobalBatch {
  int micro_batch = 0;
  std::int64_t micro_batches = 0;
  std::int64_t sequences() const { return static_cast<std::int64_t>(micro_batch) * micro_batches; }
  bool operator==(const GlobalBatch&) const = default;
};

}  // namespace btm

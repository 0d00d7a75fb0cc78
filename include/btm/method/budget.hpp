// budget.hpp: compute matching, the paper's rule on any number of ranks.
// A run of K ELMs of r ranks each stands for the paper's layout of K x r ranks:
//   - every model path takes run.steps = S optimizer steps: the seed round(run.seed_share x S)
//     of them, each ELM the rest (continuing the seed's schedule), the dense baseline all S
//     from the initialisation;
//   - an ELM's global batch is r x A micro-batches of B sequences (B = data.batch per rank,
//     A = data.accum);
//   - the seed's and the dense baseline's global batch is K times that.
// So the forest's tokens (seed + K ELMs) equal the dense baseline's, exactly. On W physical
// ranks the seed and dense form their batch as W ranks x (K r A / W) micro-steps of B
// sequences, so W must divide K r A (and be a multiple of r, for the ELM groups); any other W
// is refused before any work. A step's micro-batch gradients are summed exactly
// (fixed_point.hpp): a model is the same bits on every valid W, and on a restart with another W.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "btm/config/config.hpp"
#include "btm/model/global_batch.hpp"

namespace btm {

struct Budget {
  int elms = 0;           // K
  int ranks_per_elm = 1;  // r
  int context = 0;        // T
  double flops_per_token = 0;
  std::int64_t total_steps = 0;  // S: every model path
  std::int64_t seed_steps = 0;   // round(seed_share x S)
  std::int64_t elm_steps = 0;    // S - seed_steps, each ELM after branching
  GlobalBatch elm_batch;         // r x A micro-batches
  GlobalBatch world_batch;       // K r A micro-batches: the seed and the dense baseline
  // Validation during training: after every step that is a multiple of eval_every and after a
  // model's last step, on the first eval_blocks blocks of each domain's valid split
  // (run.eval_every, 0: a quarter of an ELM's steps; run.eval_blocks, 0: none).
  std::int64_t eval_every = 1;
  std::int64_t eval_blocks = 0;

  std::int64_t tokens_per_step(const GlobalBatch& b) const { return b.sequences() * context; }
  std::int64_t seed_tokens() const { return seed_steps * tokens_per_step(world_batch); }
  std::int64_t elm_tokens() const { return elm_steps * tokens_per_step(elm_batch); }  // one ELM
  std::int64_t forest_tokens() const { return seed_tokens() + elms * elm_tokens(); }
  std::int64_t dense_tokens() const { return total_steps * tokens_per_step(world_batch); }
  bool validates_at(std::int64_t step, std::int64_t target_steps) const {
    return eval_blocks > 0 && (step % eval_every == 0 || step == target_steps);
  }
};

// The budget of a run of `elms` ELMs (independent of the number of ranks it runs on).
Budget make_budget(const Config& config, int elms);

// The world sizes that can run the budget: multiples of r that divide K r A.
std::vector<int> valid_worlds(const Budget& budget);
// Throws InputError, naming the batch and the world sizes that work, unless `world` is valid.
void check_world(const Budget& budget, int world);
// Micro-steps per rank when `ranks` ranks form `batch`; InputError naming `model` and the rank
// counts that would work unless ranks divides its micro-batches.
int accumulation(const GlobalBatch& batch, int ranks, const std::string& model);

// The per-phase plan on `world` ranks (btm layout and the run's header): ranks, micro-batch,
// accumulation, global batch, steps, tokens and FLOPs of the seed, an ELM and the dense
// baseline, and the match check.
std::string describe_budget(const Budget& budget, int world);

}  // namespace btm

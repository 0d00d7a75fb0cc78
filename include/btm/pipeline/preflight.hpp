// preflight.hpp: the checks a command makes before it writes anything, each refusing with what
// to do (InputError, on every rank):
//   - every domain's corpus holds a block of context + 1 tokens in the splits it will read;
//   - the run directory (and elms/, metrics/) can be written;
//   - its filesystem has room for the checkpoints the command writes (the figure is in the
//     message);
//   - the model, its optimizer state and its activations at data.batch fit the memory of this
//     rank (the GPU's on GPUs).
#pragma once

#include <string>
#include <vector>

#include "btm/pipeline/run_context.hpp"

namespace btm {

struct PreflightPlan {
  std::vector<std::string> writes;  // the models whose checkpoints the command may write
  bool trains = false;              // it trains (the model must fit, the train splits hold a block)
  bool evaluates = false;           // it evaluates (the valid and test splits hold a block)
};

void preflight(RunContext& ctx, const PreflightPlan& plan);

}  // namespace btm

#include "btm/method/budget.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "btm/model/params.hpp"
#include "btm/util/error.hpp"
#include "btm/util/format.hpp"

namespace btm {

namespace {

// {1, 2, 4} -> "1, 2 or 4"
std::string join(const std::vector<int>& values) {
  std::string out;
  for (std::size_t i = 0; i < values.size(); ++i)
    out += (i == 0 ? "" : i + 1 == values.size() ? " or " : ", ") + std::to_string(values[i]);
  return out;
}

std::string flops(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.3e", value);
  return text;
}

}  // namespace

Budget make_budget(const Config& config, int elms) {
  Budget b;
  b.elms = elms;
  b.ranks_per_elm = config.run.ranks_per_elm;
  b.context = config.model.context;
  b.flops_per_token = train_flops_per_token(ParamLayout(config.model));
  b.total_steps = config.run.steps;
  b.seed_steps = std::llround(config.run.seed_share * static_cast<double>(config.run.steps));
  b.elm_steps = b.total_steps - b.seed_steps;
  b.elm_batch.micro_batch = config.data.batch;
  b.elm_batch.micro_batches =
      static_cast<std::int64_t>(config.run.ranks_per_elm) * config.data.accum;
  b.world_batch.micro_batch = config.data.batch;
  b.world_batch.micro_batches = b.elm_batch.micro_batches * elms;
  const std::int64_t quarter = (std::max<std::int64_t>(b.elm_steps, 1) + 3) / 4;
  b.eval_every = config.run.eval_every > 0 ? config.run.eval_every : quarter;
  b.eval_blocks = config.run.eval_blocks;
  return b;
}

std::vector<int> valid_worlds(const Budget& b) {
  std::vector<int> out;
  const std::int64_t M = b.world_batch.micro_batches;
  for (std::int64_t w = b.ranks_per_elm; w <= M; w += b.ranks_per_elm)
    if (M % w == 0) out.push_back(static_cast<int>(w));
  return out;
}

void check_world(const Budget& b, int world) {
  const std::int64_t M = b.world_batch.micro_batches;
  if (world >= 1 && world % b.ranks_per_elm == 0 && M % world == 0) return;
  throw InputError(
      "rank layout: " + counted(world, "rank") +
      " cannot form the seed's and the dense "
      "baseline's global batch of K x r x A = " +
      std::to_string(b.elms) + " x " + std::to_string(b.ranks_per_elm) + " x " +
      std::to_string(M / b.elms / b.ranks_per_elm) + " = " + std::to_string(M) +
      " micro-batches of " + std::to_string(b.world_batch.micro_batch) +
      " sequences (the paper's rule: K times an ELM's batch, formed by ranks x accumulation): "
      "start " +
      join(valid_worlds(b)) + " ranks, or change data.accum or run.ranks_per_elm");
}

int accumulation(const GlobalBatch& batch, int ranks, const std::string& model) {
  if (ranks >= 1 && batch.micro_batches % ranks == 0)
    return static_cast<int>(batch.micro_batches / ranks);
  std::vector<int> ok;
  for (std::int64_t r = 1; r <= batch.micro_batches; ++r)
    if (batch.micro_batches % r == 0) ok.push_back(static_cast<int>(r));
  throw InputError(
      "'" + model + "' trains with a global batch of " + std::to_string(batch.micro_batches) +
      " micro-batches of " + std::to_string(batch.micro_batch) +
      " sequences (fixed when it started): " + counted(ranks, "rank") +
      " cannot form it; train it on " + join(ok) + " ranks (for an ELM: run.ranks_per_elm)");
}

std::string describe_budget(const Budget& b, int world) {
  std::ostringstream s;
  const std::int64_t T = b.context;
  const int r = b.ranks_per_elm;
  s << "compute plan (the paper's rule): " << counted(b.elms, "ELM") << " x " << counted(r, "rank")
    << " stand for " << counted(b.elms * r, "rank") << ", run on " << world
    << "; every model path takes " << grouped(b.total_steps) << " optimizer steps\n";
  char line[256];
  std::snprintf(line, sizeof(line), "  %-12s %6s %12s %6s %26s %12s %16s %11s\n", "model", "ranks",
                "micro-batch", "accum", "global batch (seq / tok)", "steps", "tokens", "FLOPs");
  s << line;
  auto row = [&](const std::string& name, int ranks, const GlobalBatch& batch, std::int64_t steps,
                 const std::string& steps_text, std::int64_t models) {
    const std::int64_t accum =
        ranks > 0 && batch.micro_batches % ranks == 0 ? batch.micro_batches / ranks : 0;
    const std::int64_t tokens = steps * batch.sequences() * T * models;
    const std::string global = grouped(batch.sequences()) + " / " + grouped(batch.sequences() * T);
    std::snprintf(line, sizeof(line), "  %-12s %6d %12d %6s %26s %12s %16s %11s\n", name.c_str(),
                  ranks, batch.micro_batch, accum > 0 ? std::to_string(accum).c_str() : "-",
                  global.c_str(), steps_text.c_str(), grouped(tokens).c_str(),
                  flops(static_cast<double>(tokens) * b.flops_per_token).c_str());
    s << line;
  };
  row("seed", world, b.world_batch, b.seed_steps, grouped(b.seed_steps), 1);
  row("ELM x " + std::to_string(b.elms), r, b.elm_batch, b.elm_steps,
      grouped(b.elm_steps) + " each", b.elms);
  row("dense", world, b.world_batch, b.total_steps, grouped(b.total_steps), 1);
  const bool equal = b.forest_tokens() == b.dense_tokens();
  s << "  match: forest (seed + " << counted(b.elms, "ELM") << ") " << grouped(b.forest_tokens())
    << " tokens, dense " << grouped(b.dense_tokens())
    << " tokens: " << (equal ? "equal" : "NOT EQUAL") << " ("
    << flops(static_cast<double>(b.forest_tokens()) * b.flops_per_token) << " FLOPs each)\n";
  if (b.eval_blocks > 0)
    s << "  validation: every " << counted(b.eval_every, "step") << " and at each model's end, "
      << counted(b.eval_blocks, "block") << " of each of its domains' valid split\n";
  else
    s << "  validation: off (run.eval_blocks = 0)\n";
  return s.str();
}

}  // namespace btm

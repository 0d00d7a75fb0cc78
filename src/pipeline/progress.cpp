#include "btm/pipeline/progress.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "btm/data/corpus.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/forest.hpp"
#include "btm/method/budget.hpp"
#include "btm/method/rank_layout.hpp"
#include "btm/pipeline/blocks.hpp"
#include "btm/pipeline/phases.hpp"
#include "btm/util/format.hpp"

namespace btm {

namespace fs = std::filesystem;

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--:--";
  const long long s = std::llround(seconds);
  char text[48];
  if (s >= 86400)
    std::snprintf(text, sizeof(text), "%lldd %02lld:%02lld:%02lld", s / 86400, (s / 3600) % 24,
                  (s / 60) % 60, s % 60);
  else
    std::snprintf(text, sizeof(text), "%02lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  return text;
}

std::string short_count(double n) {
  char text[32];
  const double a = std::abs(n);
  if (a >= 1e12)
    std::snprintf(text, sizeof(text), "%.2fT", n / 1e12);
  else if (a >= 1e9)
    std::snprintf(text, sizeof(text), "%.2fG", n / 1e9);
  else if (a >= 1e6)
    std::snprintf(text, sizeof(text), "%.2fM", n / 1e6);
  else if (a >= 1e3)
    std::snprintf(text, sizeof(text), "%.2fK", n / 1e3);
  else
    std::snprintf(text, sizeof(text), "%.0f", n);
  return text;
}

std::string format_progress(const ProgressLine& p) {
  char mfu[32];
  if (std::isfinite(p.mfu))
    std::snprintf(mfu, sizeof(mfu), "%.1f%%", 100.0 * p.mfu);
  else
    std::snprintf(mfu, sizeof(mfu), "n/a");
  const std::string eta = format_duration(p.model_eta_s) +
                          (p.run_eta_s >= 0 ? ", run " + format_duration(p.run_eta_s) : "");
  char line[512];
  std::snprintf(line, sizeof(line),
                "[%s] step %lld/%lld | loss %.4f | lr %.3e | |g| %.3f | %.1f ms/step | %s tok/s | "
                "MFU %s | mem %.2f GiB | %s tokens | ETA %s | %s",
                p.name.c_str(), static_cast<long long>(p.step),
                static_cast<long long>(p.target_steps), p.loss, p.lr, p.grad_norm, p.step_ms,
                grouped(std::llround(p.tokens_per_s)).c_str(), mfu,
                p.memory_bytes / (1024.0 * 1024.0 * 1024.0),
                short_count(static_cast<double>(p.tokens)).c_str(), eta.c_str(),
                utc_timestamp(p.now).c_str());
  return line;
}

std::string format_validation(const std::string& name, std::int64_t step, std::int64_t target_steps,
                              const std::vector<std::string>& domains,
                              const std::vector<double>& loss, std::int64_t tokens,
                              double seconds) {
  std::string out = "[" + name + "] valid step " + std::to_string(step) + "/" +
                    std::to_string(target_steps) + " | ppl";
  char value[48];
  for (std::size_t d = 0; d < domains.size() && d < loss.size(); ++d) {
    std::snprintf(value, sizeof(value), " %.2f", std::exp(loss[d]));
    out += (d == 0 ? " " : ", ") + domains[d] + value;
  }
  std::snprintf(value, sizeof(value), " tokens | %.2f s", seconds);
  return out + " | " + short_count(static_cast<double>(tokens)) + value;
}

double WorkAhead::seconds(double rate) const {
  if (!(rate > 0)) return -1;
  double tokens_per_rank = 0;
  for (const Model& m : models)
    tokens_per_rank += static_cast<double>(m.steps) * static_cast<double>(m.tokens_per_step) /
                       std::max(1, m.ranks);
  tokens_per_rank += eval_tokens / std::max(1, world) / 3.0;
  return tokens_per_rank / rate;
}

namespace {

// Steps `model` has left by its checkpoint, else `planned` (not branched yet).
std::int64_t steps_left(const RunContext& ctx, const std::string& model, std::int64_t planned) {
  std::error_code ec;
  const fs::path file = checkpoint_file(ctx.run_dir, model);
  if (!fs::exists(file, ec)) return planned;
  try {
    const CheckpointInfo c = peek_checkpoint(file);
    return std::max<std::int64_t>(0, c.target_steps - c.step);
  } catch (const std::exception&) {
    return planned;  // an estimate only: the phase that trains it reports a bad file
  }
}

// The forward tokens of the evaluation (eval/plan): every ELM on each domain's test and
// validation blocks, the dense model and about two parameter averages per domain on the test
// blocks.
double eval_tokens(const RunContext& ctx, std::size_t elms) {
  const Config& c = ctx.config;
  std::vector<std::string> domains = c.data.domains;
  domains.insert(domains.end(), c.data.eval_domains.begin(), c.data.eval_domains.end());
  double test = 0, valid = 0;
  for (const std::string& d : domains) {
    try {
      const CorpusInfo info = read_corpus_info(domain_corpus(ctx, d));
      test += static_cast<double>(
          usable_blocks(static_cast<std::size_t>(info.tokens[2]), c.model.context, c.eval.blocks));
      valid += static_cast<double>(usable_blocks(static_cast<std::size_t>(info.tokens[1]),
                                                 c.model.context, c.eval.prior_blocks));
    } catch (const std::exception&) {
      // an estimate only: the evaluation reports a missing corpus
    }
  }
  const double K = static_cast<double>(elms);
  return c.model.context * ((K + (c.run.dense ? 1 : 0) + 2) * test + K * valid);
}

}  // namespace

WorkAhead work_after(const RunContext& ctx, const std::string& name,
                     const std::vector<std::string>& later_elms) {
  const Config& c = ctx.config;
  const std::vector<std::string> elms = elm_names(c);
  const Budget b = make_budget(c, static_cast<int>(elms.size()));
  WorkAhead w;
  w.world = ctx.world.size();
  const std::int64_t elm_tokens = b.tokens_per_step(b.elm_batch);
  for (const std::string& e : later_elms)
    w.models.push_back({steps_left(ctx, e, b.elm_steps), elm_tokens, b.ranks_per_elm});
  if (name == "seed" && ctx.ahead.elms && !elms.empty() && w.world % b.ranks_per_elm == 0) {
    // Group 0 trains the most ELMs (round robin): its waves end the phase.
    const RankLayout layout = plan_layout(w.world, b.ranks_per_elm, elms);
    for (const std::string& e : layout.elms_of_group(0))
      w.models.push_back({steps_left(ctx, e, b.elm_steps), elm_tokens, b.ranks_per_elm});
  }
  if (name != "dense" && ctx.ahead.dense) {
    const bool continues_seed = b.seed_steps > 0 && c.run.seed_checkpoint.empty();
    const std::int64_t planned = continues_seed ? b.total_steps - b.seed_steps : b.total_steps;
    w.models.push_back(
        {steps_left(ctx, "dense", planned), b.tokens_per_step(b.world_batch), w.world});
  }
  if (ctx.ahead.eval) w.eval_tokens = eval_tokens(ctx, elms.size());
  return w;
}

}  // namespace btm

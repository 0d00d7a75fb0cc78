// progress.hpp: what a training group's leader prints: one progress line per run.log_every
// steps, one validation line per validation, and the ETA of the work its command still has to
// do (the current model, the group's later ELMs, the dense baseline, the evaluation), estimated
// from the measured step time.
#pragma once

#include <cstdint>
#include <ctime>
#include <string>
#include <vector>

#include "btm/pipeline/run_context.hpp"
#include "btm/util/format.hpp"  // utc_timestamp

namespace btm {

struct ProgressLine {
  std::string name;
  std::int64_t step = 0, target_steps = 0;
  double loss = 0, lr = 0, grad_norm = 0;
  double step_ms = 0;       // mean over the logging window
  double tokens_per_s = 0;  // the group's, over the logging window
  double mfu = 0;           // NaN: the device's peak is unknown (the CPU): printed "n/a"
  double memory_bytes = 0;  // Backend::memory_used
  std::int64_t tokens = 0;  // seen by the model over its lineage
  double model_eta_s = 0;   // this model's remaining steps
  double run_eta_s = -1;    // and the work after it (WorkAhead); < 0: none after it
  std::time_t now = 0;
};
// "[seed] step 10/100 | loss 5.1234 | lr 1.000e-04 | |g| 0.812 | 152.3 ms/step | 53,812 tok/s |
//  MFU 41.2% | mem 12.34 GiB | 1.31M tokens | ETA 00:01:02, run 00:12:34 | 2026-12-02T06:40:12Z"
std::string format_progress(const ProgressLine& p);

// "[seed] valid step 25/100 | ppl religious 523.10, dictionary 300.20 | 1.31M tokens | 0.31 s"
std::string format_validation(const std::string& name, std::int64_t step, std::int64_t target_steps,
                              const std::vector<std::string>& domains,
                              const std::vector<double>& loss, std::int64_t tokens, double seconds);

// "00:01:02", "1d 02:03:04"; "--:--:--" for a negative or non-finite value.
std::string format_duration(double seconds);
// 1310720 -> "1.31M", 2500 -> "2.50K", 999 -> "999"
std::string short_count(double n);

// The work a command still has to do after the model in training, for the ETA: models to
// train (steps left, tokens per step, ranks) one after another, and the evaluation's
// forward-only tokens over the whole world.
struct WorkAhead {
  struct Model {
    std::int64_t steps = 0, tokens_per_step = 0;
    int ranks = 1;
  };
  std::vector<Model> models;
  double eval_tokens = 0;
  int world = 1;
  bool empty() const { return models.empty() && eval_tokens <= 0; }
  // Seconds at `rate` training tokens per second per rank; a forward-only token of the
  // evaluation counts as a third of a training token (2N of the 6N FLOPs).
  double seconds(double rate) const;
};

// After model `name` (seed, dense or an ELM) in `ctx`'s command (ctx.ahead says which phases
// follow): `later_elms`, the ELMs the same group trains next, then the ELM phase after the seed
// (the busiest group's share of it), the dense baseline, the evaluation. Estimates: a model not
// started yet counts its budget's steps.
WorkAhead work_after(const RunContext& ctx, const std::string& name,
                     const std::vector<std::string>& later_elms);

}  // namespace btm

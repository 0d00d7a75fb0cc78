#include "btm/pipeline/phase_times.hpp"

#include <cstdio>
#include <iostream>

#include "btm/pipeline/phase_support.hpp"

namespace btm {

PhaseClock::PhaseClock() : last_(std::chrono::steady_clock::now()) {}

void PhaseClock::lap(const std::string& name, const RunContext& ctx) {
  const auto now = std::chrono::steady_clock::now();
  phases_.push_back({name, std::chrono::duration<double>(now - last_).count(),
                     ctx.training_s - training_at_last_});
  last_ = now;
  training_at_last_ = ctx.training_s;
}

std::string describe_phase_times(const std::vector<PhaseTime>& phases) {
  double wall = 0, train = 0;
  for (const PhaseTime& p : phases) {
    wall += p.wall_s;
    train += p.train_s;
  }
  const auto share = [&](double s) { return wall > 0 ? 100.0 * s / wall : 0.0; };
  char text[128];
  std::snprintf(text, sizeof(text), "wall %.1f s:", wall);
  std::string out = text;
  for (std::size_t i = 0; i < phases.size(); ++i) {
    std::snprintf(text, sizeof(text), "%s %s %.1f s (%.1f%%)", i ? "," : "",
                  phases[i].phase.c_str(), phases[i].wall_s, share(phases[i].wall_s));
    out += text;
  }
  std::snprintf(text, sizeof(text), " | training %.1f s = %.1f%% of the wall time", train,
                share(train));
  return out + text;
}

void record_phase_times(RunContext& ctx, std::vector<PhaseTime> phases) {
  const double ranks = ctx.world.size();
  for (PhaseTime& p : phases) p.train_s = ctx.world.allreduce_sum(p.train_s) / ranks;
  on_leader(ctx, [&] {
    std::cout << "[run] " << describe_phase_times(phases) << std::endl;
    Forest forest = load_or_new_forest(ctx);
    forest.timing = phases;
    save_forest(ctx.run_dir, forest);
  });
}

}  // namespace btm

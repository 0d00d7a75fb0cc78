// phase_times.hpp: where the wall time of a `btm run` goes: each phase's wall time and the time
// its ranks spent in training steps, printed at the end and stored in forest.h5 (/timing).
// Pipeline efficiency = training time / wall time.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "btm/io/forest.hpp"
#include "btm/pipeline/run_context.hpp"

namespace btm {

class PhaseClock {
 public:
  PhaseClock();
  // Ends the phase `name` now: its wall time since the last lap, and this rank's training
  // seconds since then (ctx.training_s).
  void lap(const std::string& name, const RunContext& ctx);
  const std::vector<PhaseTime>& phases() const { return phases_; }

 private:
  std::chrono::steady_clock::time_point last_;
  double training_at_last_ = 0;
  std::vector<PhaseTime> phases_;
};

// "wall 294.1 s: start 2.0 s (0.7%), seed 68.4 s (23.3%), ... | training 199.0 s = 67.7% of the
// wall time" for the phases' times (train_s already the mean over ranks).
std::string describe_phase_times(const std::vector<PhaseTime>& phases);

// Collective: the mean over the world's ranks of each phase's training time; rank 0 prints
// describe_phase_times and stores the phases in forest.h5.
void record_phase_times(RunContext& ctx, std::vector<PhaseTime> phases);

}  // namespace btm

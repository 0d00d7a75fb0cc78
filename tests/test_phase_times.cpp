// The phase-time summary btm run prints at its end.
#include <gtest/gtest.h>

#include "btm/pipeline/phase_times.hpp"

using namespace btm;

TEST(PhaseTimes, SharesAreOfTheWholeWallTimeAndTrainingIsSummed) {
  const std::vector<PhaseTime> phases = {
      {"seed", 30.0, 27.0}, {"branch", 0.5, 0.0}, {"elms", 60.0, 54.0}, {"eval", 9.5, 0.0}};
  // wall 100 s; training 81 s.
  EXPECT_EQ(describe_phase_times(phases),
            "wall 100.0 s: seed 30.0 s (30.0%), branch 0.5 s (0.5%), elms 60.0 s (60.0%), eval "
            "9.5 s (9.5%) | training 81.0 s = 81.0% of the wall time");
  EXPECT_EQ(describe_phase_times({}), "wall 0.0 s: | training 0.0 s = 0.0% of the wall time");
}

// clock.hpp: the monotonic clock that phases and benchmarks time themselves with.
#pragma once

#include <chrono>

namespace btm {

using Clock = std::chrono::steady_clock;

// Seconds from `start` to now.
inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace btm

// clock.hpp: the monotonic clock that phases and benchmarks time themselves with.
#pragma once

#include <chrono>

namespace btm {

using Clock = std::chrono::steady_clock;

// Seconds from `from` to `to`.
inline double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// Seconds from `start` to now.
inline double seconds_since(Clock::time_point start) {
  return seconds_between(start, Clock::now());
}

}  // namespace btm

// format.hpp: numbers in messages and tables: thousands grouped, counted nouns, the shortest
// exact text of a double; timestamps.
#pragma once

#include <cstdint>
#include <ctime>
#include <string>

namespace btm {

// 1234567 -> "1,234,567"
std::string grouped(std::int64_t n);
// (1, "rank") -> "1 rank", (2, "rank") -> "2 ranks"
std::string counted(std::int64_t n, const std::string& noun);
// ISO 8601 in UTC: "2026-12-02T06:40:12Z" (progress lines, the written_at of files)
std::string utc_timestamp(std::time_t t);

// The shortest text that reads back as exactly `x`, in printf %g's style: 0.0005 -> "0.0005"
// (not 0.00050000000000000001), 1e-8 -> "1e-08", 80000 -> "80000".
std::string shortest(double x);

}  // namespace btm

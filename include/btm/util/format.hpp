// format.hpp: numbers in messages and tables: thousands grouped, counted nouns; timestamps.
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

}  // namespace btm

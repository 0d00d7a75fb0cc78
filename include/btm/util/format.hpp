// format.hpp: numbers in messages and tables: thousands grouped, counted nouns.
#pragma once

#include <cstdint>
#include <string>

namespace btm {

// 1234567 -> "1,234,567"
std::string grouped(std::int64_t n);
// (1, "rank") -> "1 rank", (2, "rank") -> "2 ranks"
std::string counted(std::int64_t n, const std::string& noun);

}  // namespace btm

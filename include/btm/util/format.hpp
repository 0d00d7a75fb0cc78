// format.hpp: numbers in messages and tables: thousands grouped, counted nouns, the shortest
// exact text of a double.
#pragma once

#include <cstdint>
#include <string>

namespace btm {

// 1234567 -> "1,234,567"
std::string grouped(std::int64_t n);
// (1, "rank") -> "1 rank", (2, "rank") -> "2 ranks"
std::string counted(std::int64_t n, const std::string& noun);
// The shortest text that reads back as exactly `x`, in printf %g's style: 0.0005 -> "0.0005"
// (not 0.00050000000000000001), 1e-8 -> "1e-08", 80000 -> "80000".
std::string shortest(double x);

}  // namespace btm

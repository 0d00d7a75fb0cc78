// json_line.hpp: one JSON object on one line, as the benchmarks print their figures
// ({"case": "train", "tokens_per_s": 524288, ...}: the top level spaced for greps, values as
// nlohmann::json writes them), and figures rounded to the digits they are worth.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace btm {

// Keys in insertion order, "key": value separated by ", "; nested values compact.
std::string json_line(const nlohmann::ordered_json& object);

// x rounded to `decimals` digits after the point (a measured time or rate printed with the
// precision it has; nlohmann::json prints the shortest form that reads back).
double rounded(double x, int decimals);

}  // namespace btm

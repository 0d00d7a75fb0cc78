// json_line: the benchmarks' one-line JSON, spaced at the top level, parsed back unchanged.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <limits>

#include "btm/util/json_line.hpp"

namespace btm {
namespace {

TEST(JsonLine, KeepsKeyOrderAndSpacesTheTopLevel) {
  const nlohmann::ordered_json j = {{"case", "train"},
                                    {"tokens_per_s", 524288},
                                    {"shape", {{"N", 4}, {"C", 768}}},
                                    {"name", "a \"quoted\"\nname"},
                                    {"ms", rounded(0.031049, 4)}};
  const std::string line = json_line(j);
  EXPECT_EQ(line,
            "{\"case\": \"train\", \"tokens_per_s\": 524288, \"shape\": {\"N\":4,\"C\":768}, "
            "\"name\": \"a \\\"quoted\\\"\\nname\", \"ms\": 0.031}");
  EXPECT_EQ(nlohmann::ordered_json::parse(line), j);
}

TEST(JsonLine, RoundsToTheDigitsAsked) {
  EXPECT_EQ(rounded(813.349, 1), 813.3);
  EXPECT_EQ(rounded(-2.5, 0), -3.0);  // half away from zero, as std::round
  EXPECT_EQ(rounded(1.23456, 4), 1.2346);
  EXPECT_TRUE(std::isnan(rounded(std::numeric_limits<double>::quiet_NaN(), 2)));
  EXPECT_THROW(json_line(nlohmann::ordered_json::array({1, 2})), std::logic_error);
}

}  // namespace
}  // namespace btm

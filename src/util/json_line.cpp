#include "btm/util/json_line.hpp"

#include <cmath>

#include <stdexcept>

namespace btm {

std::string json_line(const nlohmann::ordered_json& object) {
  if (!object.is_object()) throw std::logic_error("json_line: not an object");
  std::string line = "{";
  for (auto it = object.begin(); it != object.end(); ++it) {
    if (it != object.begin()) line += ", ";
    line += nlohmann::json(it.key()).dump() + ": " + it.value().dump();
  }
  return line + "}";
}

double rounded(double x, int decimals) {
  if (!std::isfinite(x)) return x;
  const double scale = std::pow(10.0, decimals);
  return std::round(x * scale) / scale;
}

}  // namespace btm

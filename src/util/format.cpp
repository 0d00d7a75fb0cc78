#include "btm/util/format.hpp"

#include <charconv>

namespace btm {

std::string grouped(std::int64_t n) {
  const std::string digits = std::to_string(n < 0 ? -n : n);
  std::string out = n < 0 ? "-" : "";
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string counted(std::int64_t n, const std::string& noun) {
  return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

std::string utc_timestamp(std::time_t t) {
  std::tm utc{};
  gmtime_r(&t, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

std::string shortest(double x) {
  char text[64];
  const auto [end, ec] = std::to_chars(text, text + sizeof(text), x, std::chars_format::general);
  return ec == std::errc() ? std::string(text, end) : std::to_string(x);
}

}  // namespace btm

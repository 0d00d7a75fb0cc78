// json_error.hpp (private to src/data): the part of a nlohmann::json parse error that goes into
// btm's messages, which name the file and line themselves.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace btm {

// What a nlohmann::json parse error says, without its prefix ("[json.exception.parse_error.101]
// parse error at line 1, column 5: ") and with its "last read" token cut to 40 bytes, so that an
// unterminated string does not copy a whole document into the message.
inline std::string json_parse_error_detail(std::string_view what) {
  std::string_view detail = what;
  if (const std::size_t at = what.find("parse error"); at != std::string_view::npos)
    if (const std::size_t colon = what.find(": ", at); colon != std::string_view::npos)
      detail = what.substr(colon + 2);
  std::string out(detail);
  constexpr std::string_view kMark = "; last read: '";
  constexpr std::size_t kMaxToken = 40;
  if (const std::size_t mark = out.find(kMark); mark != std::string::npos) {
    const std::size_t begin = mark + kMark.size();
    if (out.size() > begin + kMaxToken + 1) {
      std::size_t cut = begin + kMaxToken;  // not inside a UTF-8 sequence
      while (cut > begin && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;
      out.resize(cut);
      out += "...'";
    }
  }
  return out;
}

}  // namespace btm

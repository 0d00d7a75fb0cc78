// enum_words.hpp: the words an enum is written as in configs, files and messages, one table per
// enum (a specialisation of EnumWords next to the enum), so no string is compared where the
// value is used.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace btm {

// Specialise with `static constexpr std::array<std::pair<E, std::string_view>, N> words`.
template <typename E>
struct EnumWords;

template <typename E>
constexpr std::string_view word_of(E value) {
  for (const auto& [v, w] : EnumWords<E>::words)
    if (v == value) return w;
  return "?";
}

template <typename E>
constexpr std::optional<E> from_word(std::string_view text) {
  for (const auto& [v, w] : EnumWords<E>::words)
    if (w == text) return v;
  return std::nullopt;
}

// "auto, cpu or cuda"
template <typename E>
std::string word_list() {
  std::string out;
  const auto& words = EnumWords<E>::words;
  for (std::size_t i = 0; i < words.size(); ++i)
    out += (i == 0 ? "" : i + 1 == words.size() ? " or " : ", ") + std::string(words[i].second);
  return out;
}

}  // namespace btm

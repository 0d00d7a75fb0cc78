// utf8.hpp: the one UTF-8 encoder, decoder and validator of btm (prepare checks text with it, the
// tokenizer decodes GPT-2's files with it). One set of rules: a valid sequence is the shortest
// form of a Unicode scalar value, so overlong forms, UTF-16 surrogates (U+D800..U+DFFF), code
// points above U+10FFFF, stray continuation bytes and truncated sequences are all invalid.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace btm {

// Offset of the first byte of `text` that is not part of valid UTF-8; npos when all of it is
// valid.
std::size_t first_invalid_utf8(std::string_view text);

// The code points of `text` into `out`; false (and `out` unspecified) if `text` is not valid
// UTF-8 by the rules of first_invalid_utf8.
bool decode_utf8(std::string_view text, std::u32string& out);

// Appends `cp` to `out` as UTF-8. `cp` must be a Unicode scalar value (at most U+10FFFF, not a
// surrogate); anything else is written as U+FFFD, so the output is always valid UTF-8.
void append_utf8(char32_t cp, std::string& out);

}  // namespace btm

// UTF-8 (data/utf8.hpp): the validator, the decoder and the encoder follow one set of rules
// (overlong forms, surrogates, code points above U+10FFFF, stray and missing continuation bytes
// are invalid), checked against each other on random bytes.
#include <gtest/gtest.h>

#include <string>

#include "btm/data/utf8.hpp"
#include "btm/util/rng.hpp"

using namespace btm;

TEST(Utf8, FirstInvalidByteIsFound) {
  EXPECT_EQ(first_invalid_utf8("plain ascii"), std::string_view::npos);
  EXPECT_EQ(first_invalid_utf8("caf\xc3\xa9 \xf0\x9f\x8e\x89"), std::string_view::npos);
  EXPECT_EQ(first_invalid_utf8("ab\xff"), 2u);
  EXPECT_EQ(first_invalid_utf8("\xc0\xaf"), 0u);            // overlong '/'
  EXPECT_EQ(first_invalid_utf8("x\xed\xa0\x80"), 1u);       // UTF-16 surrogate
  EXPECT_EQ(first_invalid_utf8("xy\xf4\x90\x80\x80"), 2u);  // above U+10FFFF
  EXPECT_EQ(first_invalid_utf8("abc\xe2\x82"), 3u);         // truncated sequence
  EXPECT_EQ(first_invalid_utf8("\xe2\x82\x41"), 0u);        // bad continuation byte
}

// append_utf8 writes the 1- to 4-byte forms at their boundaries, each valid UTF-8.
TEST(Utf8, AppendWritesEachLength) {
  const std::pair<char32_t, std::string> cases[] = {{0x41, "A"},
                                                    {0x7F, "\x7f"},
                                                    {0x80, "\xc2\x80"},
                                                    {0xE9, "\xc3\xa9"},
                                                    {0x7FF, "\xdf\xbf"},
                                                    {0x800, "\xe0\xa0\x80"},
                                                    {0x20AC, "\xe2\x82\xac"},
                                                    {0xFFFF, "\xef\xbf\xbf"},
                                                    {0x10000, "\xf0\x90\x80\x80"},
                                                    {0x1F389, "\xf0\x9f\x8e\x89"},
                                                    {0x10FFFF, "\xf4\x8f\xbf\xbf"}};
  for (const auto& [cp, want] : cases) {
    std::string got = "x";
    append_utf8(cp, got);
    EXPECT_EQ(got, "x" + want) << std::hex << static_cast<unsigned>(cp);
    EXPECT_EQ(first_invalid_utf8(got), std::string_view::npos) << got;
  }
}

TEST(Utf8, DecodeFollowsTheValidatorsRules) {
  std::u32string cps;
  ASSERT_TRUE(decode_utf8("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x8e\x89", cps));
  EXPECT_EQ(cps, (std::u32string{U'a', 0xE9, 0x20AC, 0x1F389}));
  ASSERT_TRUE(decode_utf8("", cps));
  EXPECT_TRUE(cps.empty());
  for (const char* bad : {"\xff", "\xc0\xaf", "\xed\xa0\x80", "\xed\xbf\xbf", "\xf4\x90\x80\x80",
                          "\xe2\x82", "\xe2\x82\x41", "\x80", "\xf8\x88\x80\x80\x80"})
    EXPECT_FALSE(decode_utf8(std::string("ok") + bad, cps)) << bad;
  // Random bytes: decode_utf8 succeeds exactly where first_invalid_utf8 finds nothing, and then
  // re-encoding the code points gives the same bytes.
  Rng rng(11);
  for (int i = 0; i < 20000; ++i) {
    std::string s(rng.next_u64() % 6, '\0');
    for (char& c : s) {
      const std::uint64_t r = rng.next_u64();
      // Mostly bytes that can start or continue a multi-byte sequence.
      c = static_cast<char>(r % 4 == 0 ? r % 0x80 : 0x80 + (r >> 8) % 0x80);
    }
    const bool valid = first_invalid_utf8(s) == std::string_view::npos;
    ASSERT_EQ(decode_utf8(s, cps), valid) << i;
    if (!valid) continue;
    std::string again;
    for (char32_t cp : cps) append_utf8(cp, again);
    EXPECT_EQ(again, s);
  }
}

TEST(Utf8, AppendWritesReplacementForNonScalarValues) {
  for (const char32_t cp : {char32_t{0xD800}, char32_t{0xDFFF}, char32_t{0x110000}}) {
    std::string got;
    append_utf8(cp, got);
    EXPECT_EQ(got, "\xef\xbf\xbd") << std::hex << static_cast<unsigned>(cp);
  }
}

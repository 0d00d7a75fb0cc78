// Tokenizers: the byte tokenizer, GPT-2's BPE against ids of OpenAI's published vocabulary
// (each expected id was looked up in encoder.json or taken from the reference encoder, not
// from this encoder), round trips on arbitrary bytes, thread safety, damaged BPE files (the
// UTF-8 rules: test_utf8.cpp).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "btm/data/tokenizer.hpp"
#include "btm/data/utf8.hpp"
#include "btm/util/error.hpp"
#include "btm/util/rng.hpp"
#include "test_util.hpp"

using namespace btm;
namespace fs = std::filesystem;

namespace {

using Ids = std::vector<std::uint16_t>;

Ids encode(const Tokenizer& t, std::string_view text) {
  Ids ids;
  t.encode(text, ids);
  return ids;
}

// GPT-2's files: $BTM_GPT2_DIR or data/gpt2 of the source tree (tools/fetch-gpt2-bpe.sh).
fs::path gpt2_dir() {
  if (const char* env = std::getenv("BTM_GPT2_DIR"); env && *env) return env;
  return fs::path(btm::test::source_dir()) / "data" / "gpt2";
}

bool have_gpt2() {
  return fs::is_regular_file(gpt2_dir() / "encoder.json") &&
         fs::is_regular_file(gpt2_dir() / "vocab.bpe");
}

const Tokenizer& gpt2() {
  static const std::unique_ptr<Tokenizer> tokenizer = make_tokenizer("gpt2", gpt2_dir());
  return *tokenizer;
}

#define REQUIRE_GPT2()                                          \
  if (!have_gpt2())                                             \
  GTEST_SKIP() << "GPT-2 BPE files not found in " << gpt2_dir() \
               << ": run tools/fetch-gpt2-bpe.sh to test the gpt2 tokenizer"

std::string random_bytes(Rng& rng, std::size_t n) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng.next_u64() & 0xFF);
  return s;
}

// Random valid UTF-8 mixing ASCII, whitespace, apostrophes, Latin, Cyrillic, CJK, digits and emoji.
std::string random_utf8(Rng& rng, std::size_t chars) {
  static const std::pair<char32_t, char32_t> ranges[] = {
      {0x20, 0x7E},   {0x09, 0x0D},       {0xA0, 0x17F},    {0x400, 0x4FF},  {0x4E00, 0x4FFF},
      {0x660, 0x669}, {0x1F300, 0x1F64F}, {0x2000, 0x206F}, {0x3000, 0x303F}};
  std::string s;
  for (std::size_t i = 0; i < chars; ++i) {
    const auto& [lo, hi] = ranges[rng.next_u64() % std::size(ranges)];
    char32_t cp = lo + static_cast<char32_t>(rng.next_u64() % (hi - lo + 1));
    append_utf8(cp, s);
    if (rng.uniform() < 0.1) s += "'s";
    if (rng.uniform() < 0.15) s += ' ';
  }
  return s;
}

}  // namespace

TEST(Tokenizer, ByteIdsAreBytesAndEndOfTextIs256) {
  auto t = make_tokenizer("byte");
  EXPECT_EQ(t->name(), "byte");
  EXPECT_EQ(t->vocab_size(), 257);
  EXPECT_EQ(t->eot_token(), 256);
  EXPECT_EQ(encode(*t, std::string("A\xff\x00z", 4)), (Ids{65, 255, 0, 122}));
  EXPECT_EQ(t->decode(Ids{104, 105, 256}), "hi<|endoftext|>");
  EXPECT_THROW(t->decode(Ids{257}), InputError);
}

TEST(Tokenizer, ByteRoundTripsRandomBytes) {
  auto t = make_tokenizer("byte");
  Rng rng(5);
  for (int i = 0; i < 50; ++i) {
    const std::string s = random_bytes(rng, rng.next_u64() % 500);
    const Ids ids = encode(*t, s);
    ASSERT_EQ(ids.size(), s.size());
    EXPECT_EQ(t->decode(ids), s);
  }
}

TEST(Tokenizer, UnknownNameAndMissingBpeFilesAreInputErrors) {
  EXPECT_THROW(make_tokenizer("sentencepiece"), InputError);
  btm::test::TempDir empty("btm-bpe");
  try {
    make_tokenizer("gpt2", empty.path());
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("fetch-gpt2-bpe.sh"), std::string::npos) << what;
    EXPECT_NE(what.find(empty.path().string()), std::string::npos) << what;
  }
}

TEST(Tokenizer, Gpt2HasGpt2sVocabulary) {
  REQUIRE_GPT2();
  EXPECT_EQ(gpt2().name(), "gpt2");
  EXPECT_EQ(gpt2().vocab_size(), 50257);
  EXPECT_EQ(gpt2().eot_token(), 50256);
  EXPECT_EQ(gpt2().decode(Ids{50256}), "<|endoftext|>");
}

TEST(Tokenizer, Gpt2KnownIds) {
  REQUIRE_GPT2();
  // encoder.json: "Hello" 15496, "Ġworld" 995, "!" 0.
  EXPECT_EQ(encode(gpt2(), "Hello world!"), (Ids{15496, 995, 0}));
  // "Ġthe" 262; "ĊĊ" (two newlines) 628; "can" 5171 + "'t" 470 (a contraction of the regex).
  EXPECT_EQ(encode(gpt2(), " the"), (Ids{262}));
  EXPECT_EQ(encode(gpt2(), "\n\n"), (Ids{628}));
  EXPECT_EQ(encode(gpt2(), "can't"), (Ids{5171, 470}));
  // Upper-case 'M is not one of the regex's contractions: "I" 40, "'" 6, "M" 44, "Ġhere" 994.
  EXPECT_EQ(encode(gpt2(), "I'M here"), (Ids{40, 6, 44, 994}));
  // tiktoken's documented example for the gpt2 encoding.
  EXPECT_EQ(encode(gpt2(), "tiktoken is great!"), (Ids{83, 1134, 30001, 318, 1049, 0}));
  // Digits: " 2023" -> "Ġ20" 1160, "23" 1954.
  EXPECT_EQ(encode(gpt2(), " 2023"), (Ids{1160, 1954}));
  // UTF-8 through the byte table: "na" 2616, "Ã¯ve" 38776 (ï = C3 AF), "ĠcafÃ©" 40304,
  // and the emoji U+1F389 (F0 9F 8E 89) as "ĠðŁ" 12520, "İ" 236 (8E), "ī" 231 (89).
  EXPECT_EQ(encode(gpt2(), "naïve café 🎉"), (Ids{2616, 38776, 40304, 12520, 236, 231}));
  // Runs of spaces: "\s+(?!\S)" leaves the last space to the word: "Ġ" 220 x3, "Ġindented" ...
  EXPECT_EQ(encode(gpt2(), "    indented\n\tcode();"),
            (Ids{220, 220, 220, 773, 4714, 198, 197, 8189, 9783}));
  EXPECT_EQ(encode(gpt2(), "日本語"), (Ids{33768, 98, 17312, 105, 45739, 252}));
}

TEST(Tokenizer, Gpt2KeepsInvalidUtf8AsPiecesOfTheirOwn) {
  REQUIRE_GPT2();
  // 0xFF is no UTF-8: it becomes its own piece ("ÿ" is 187 in encoder.json) and the text after
  // it is tokenized as usual (" Hello" -> "ĠHello" 18435).
  EXPECT_EQ(encode(gpt2(), "\xff Hello"), (Ids{187, 18435}));
  const std::string broken = "caf\xc3 \xe2\x82 ok\xed\xa0\x80!\xf0\x9f";
  EXPECT_EQ(gpt2().decode(encode(gpt2(), broken)), broken);
}

TEST(Tokenizer, Gpt2RoundTripsRandomBytesAndRandomUtf8) {
  REQUIRE_GPT2();
  Rng rng(11);
  for (int i = 0; i < 300; ++i) {
    const std::string s = random_bytes(rng, rng.next_u64() % 400);
    const Ids ids = encode(gpt2(), s);
    for (std::uint16_t id : ids) ASSERT_LT(id, 50256);  // never the special token
    ASSERT_EQ(gpt2().decode(ids), s) << "random bytes, case " << i;
  }
  for (int i = 0; i < 300; ++i) {
    const std::string s = random_utf8(rng, rng.next_u64() % 200);
    const Ids ids = encode(gpt2(), s);
    ASSERT_LE(ids.size(), s.size());
    ASSERT_EQ(gpt2().decode(ids), s) << "random UTF-8, case " << i;
  }
}

TEST(Tokenizer, Gpt2SpecialTokenTextIsNotTheSpecialToken) {
  REQUIRE_GPT2();
  // The literal text is ordinary text ("<" "|" "end" "of" "text" "|" ">"), never id 50256.
  const Ids ids = encode(gpt2(), "<|endoftext|>");
  EXPECT_GT(ids.size(), 1u);
  for (std::uint16_t id : ids) EXPECT_NE(id, 50256);
  EXPECT_EQ(gpt2().decode(ids), "<|endoftext|>");
}

TEST(Tokenizer, Gpt2HandlesVeryLongPieces) {
  REQUIRE_GPT2();
  // One regex piece each: a million spaces, letters and '=' (a quadratic merge loop would take
  // minutes here). GPT-2 has no merge of two spaces ("Ġ" 220 each); "aaaa" is 24794.
  const std::string spaces(1'000'000, ' ');
  const Ids space_ids = encode(gpt2(), spaces);
  EXPECT_EQ(space_ids, Ids(spaces.size(), 220));
  const std::string letters(1'000'000, 'a');
  EXPECT_EQ(encode(gpt2(), letters), Ids(letters.size() / 4, 24794));
  const std::string equals(1'000'000, '=');
  const Ids equal_ids = encode(gpt2(), equals);
  EXPECT_LT(equal_ids.size(), equals.size() / 8);
  EXPECT_EQ(gpt2().decode(equal_ids), equals);
}

TEST(Tokenizer, Gpt2GivesTheSameIdsFromManyThreads) {
  REQUIRE_GPT2();
  Rng rng(3);
  std::vector<std::string> texts;
  for (int i = 0; i < 64; ++i) texts.push_back(random_utf8(rng, 300));
  std::vector<Ids> expected;
  for (const auto& t : texts) expected.push_back(encode(gpt2(), t));
  const std::unique_ptr<Tokenizer> fresh = make_tokenizer("gpt2", gpt2_dir());  // a cold cache
  std::vector<std::vector<Ids>> got(4);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      for (int rep = 0; rep < 3; ++rep)
        for (const auto& t : texts) got[static_cast<std::size_t>(k)].push_back(encode(*fresh, t));
    });
  for (auto& th : threads) th.join();
  for (int k = 0; k < 4; ++k)
    for (std::size_t i = 0; i < got[static_cast<std::size_t>(k)].size(); ++i)
      ASSERT_EQ(got[static_cast<std::size_t>(k)][i], expected[i % texts.size()]);
}

TEST(Tokenizer, EncodeCommandPrintsIds) {
  REQUIRE_GPT2();
  const auto r = btm::test::run_btm("encode --tokenizer gpt2 --bpe-dir " + gpt2_dir().string() +
                                    " --text 'Hello world!'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "15496 995 0\n");
  const auto d =
      btm::test::run_btm("encode --bpe-dir " + gpt2_dir().string() + " --decode 15496,995,0");
  EXPECT_EQ(d.output, "Hello world!\n");
}

// A damaged encoder.json is an InputError naming the file and the script that fetches it again
// (nlohmann::json parses it; the message keeps the file, not the parser's line 1).
TEST(Tokenizer, DamagedEncoderJsonNamesTheFile) {
  btm::test::TempDir dir("btm-bpe");
  const auto write = [&](const char* name, const std::string& text) {
    std::ofstream(dir / name, std::ios::binary) << text;
  };
  write("vocab.bpe", "#version: 0.2\n");
  for (const std::string& json : {std::string("{\"a\": 1,"), std::string("[1, 2]"),
                                  std::string("{\"a\": \"x\"}"), std::string("{\"a\": 70000}")}) {
    write("encoder.json", json);
    try {
      make_tokenizer("gpt2", dir.path());
      ADD_FAILURE() << "expected an InputError for " << json;
    } catch (const InputError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find((dir / "encoder.json").string()), std::string::npos) << what;
      if (json != "{\"a\": 70000}")
        EXPECT_NE(what.find("fetch-gpt2-bpe.sh"), std::string::npos) << what;
      else
        EXPECT_NE(what.find("70000"), std::string::npos) << what;
    }
  }
}

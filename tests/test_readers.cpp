// Document readers (data/readers.hpp): the "text" field of a JSON line (nlohmann::json), lines
// streamed through a buffer (longer lines than the buffer, CRLF, no final newline, blank lines
// counted in line numbers), gzip members one after another, and a large .jsonl.gz read in a
// small, fixed amount of memory.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "btm/data/readers.hpp"
#include "btm/util/error.hpp"
#include "test_util.hpp"

using namespace btm;
namespace fs = std::filesystem;

namespace {

using btm::test::error_of;

void write_bytes(const fs::path& file, const std::string& data) {
  std::ofstream(file, std::ios::binary) << data;
}

// `parts` as consecutive gzip members.
void write_gzip_members(const fs::path& file, const std::vector<std::string>& parts,
                        const std::string& tail = {}) {
  std::string out;
  for (const std::string& part : parts) {
    z_stream zs{};
    EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    std::string member(deflateBound(&zs, part.size()) + 64, '\0');
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(part.data()));
    zs.avail_in = static_cast<uInt>(part.size());
    zs.next_out = reinterpret_cast<Bytef*>(member.data());
    zs.avail_out = static_cast<uInt>(member.size());
    EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
    member.resize(zs.total_out);
    deflateEnd(&zs);
    out += member;
  }
  write_bytes(file, out + tail);
}

std::vector<std::string> documents(const fs::path& file, FileKind kind,
                                   std::uint64_t limit = UINT64_MAX,
                                   const ReaderOptions& options = {}) {
  std::vector<std::string> docs;
  read_documents(file, kind, true, limit, options,
                 [&](std::string_view t) { docs.emplace_back(t); });
  return docs;
}

std::string slurp_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Resident memory of this process in bytes (Linux).
std::int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * 4096;
}

}  // namespace

TEST(Readers, FileKindsByName) {
  EXPECT_EQ(document_file_kind("a/b.txt"), FileKind::Text);
  EXPECT_EQ(document_file_kind("x.jsonl"), FileKind::JsonLines);
  EXPECT_EQ(document_file_kind("x.jsonl.gz"), FileKind::GzipJsonLines);
  EXPECT_FALSE(document_file_kind("x.json"));
  EXPECT_FALSE(document_file_kind("x.txt.gz"));
  EXPECT_FALSE(document_file_kind("SOURCE"));
}

TEST(Readers, JsonLineTextTakesTheFirstTopLevelTextString) {
  EXPECT_EQ(json_line_text(R"({"text": "a\nb\u00e9\ud83c\udf89\u0000z"})", "w"),
            std::string("a\nb\xc3\xa9\xf0\x9f\x8e\x89\0z", 11));
  EXPECT_EQ(json_line_text(
                R"({"id": 1, "meta": {"text": 5, "x": [1, {"text": null}]}, "text": "t"})", "w"),
            "t");
  EXPECT_EQ(json_line_text(R"({"text": "first", "text": "second"})", "w"), "first");
  EXPECT_EQ(json_line_text(" {\"text\": \"\"} \r", "w"), "");
}

TEST(Readers, JsonLineErrorsSayWhereAndWhatIsExpected) {
  const auto err = [](std::string_view line) {
    return error_of([&] { json_line_text(line, "f.jsonl:7"); });
  };
  for (const char* line : {R"({"title": "x"})", R"({})"}) {
    const std::string e = err(line);
    EXPECT_EQ(e.rfind("f.jsonl:7: no \"text\" field", 0), 0u) << e;
    EXPECT_NE(e.find("JSON object with a \"text\" string"), std::string::npos) << e;
  }
  for (const char* line : {R"({"text": 5})", R"({"text": null, "text": "late"})",
                           R"({"text": ["a"]})", R"({"text": {"a": "b"}})"}) {
    const std::string e = err(line);
    EXPECT_EQ(e.rfind("f.jsonl:7: the \"text\" field is not a string", 0), 0u) << line << ": " << e;
  }
  for (const char* line : {R"(["text"])", R"("text")", "5"}) {
    const std::string e = err(line);
    EXPECT_EQ(e.rfind("f.jsonl:7: not a JSON object", 0), 0u) << line << ": " << e;
  }
  for (const char* line : {"not json", R"({"text": "unterminated})", R"({"text": "a"} extra)",
                           R"({"text": "a\q"})", R"({"text": "\ud800"})", "{\"text\": \"a\tb\"}"}) {
    const std::string e = err(line);
    EXPECT_EQ(e.rfind("f.jsonl:7: not valid JSON: ", 0), 0u) << line << ": " << e;
    EXPECT_NE(e.find("(at column "), std::string::npos) << e;
    EXPECT_EQ(e.find("json.exception"), std::string::npos) << e;
  }
  // The parser's "last read" is cut short: a long unterminated string is not copied whole.
  const std::string e = err("{\"text\": \"" + std::string(100000, 'x'));
  EXPECT_LT(e.size(), 300u) << e;
}

TEST(Readers, LinesLongerThanTheBufferCrlfAndNoFinalNewline) {
  btm::test::TempDir dir("btm-readers");
  const std::string big(3'500'000, 'q');  // several read buffers
  const std::string text = "{\"text\": \"one\"}\r\n\n   \n{\"text\": \"" + big +
                           "\"}\n{\"text\": \"\"}\n{\"text\": \"last\"}";
  write_bytes(dir / "d.jsonl", text);
  const auto docs = documents(dir / "d.jsonl", FileKind::JsonLines);
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0], "one");
  EXPECT_EQ(docs[1], big);
  EXPECT_EQ(docs[2], "last");
  EXPECT_EQ(documents(dir / "d.jsonl", FileKind::JsonLines, 2).size(), 2u);
  EXPECT_TRUE(documents(dir / "d.jsonl", FileKind::JsonLines, 0).empty());
  // Blank lines count in the line numbers.
  write_bytes(dir / "e.jsonl", "{\"text\": \"a\"}\n\n  \n{\"x\": 1}\n");
  const std::string e = error_of([&] { documents(dir / "e.jsonl", FileKind::JsonLines); });
  EXPECT_NE(e.find((dir / "e.jsonl").string() + ":4: no \"text\" field"), std::string::npos) << e;
}

TEST(Readers, TextFilesAreOneDocument) {
  btm::test::TempDir dir("btm-readers");
  write_bytes(dir / "a.txt", "line one\nline two\n");
  write_bytes(dir / "empty.txt", "");
  EXPECT_EQ(documents(dir / "a.txt", FileKind::Text),
            std::vector<std::string>{"line one\nline two\n"});
  EXPECT_TRUE(documents(dir / "empty.txt", FileKind::Text).empty());
  EXPECT_EQ(read_whole_file(dir / "a.txt"), "line one\nline two\n");
  const std::string e = error_of([&] { read_whole_file(dir / "missing.txt"); });
  EXPECT_NE(e.find((dir / "missing.txt").string() + ": cannot open for reading"), std::string::npos)
      << e;
}

TEST(Readers, GzipMembersAndZeroPaddingAreOneStream) {
  btm::test::TempDir dir("btm-readers");
  // A line split across two members, and tape-block zero padding after the last one.
  write_gzip_members(dir / "d.jsonl.gz", {"{\"text\": \"a\"}\n{\"te", "xt\": \"b\"}\n"},
                     std::string(512, '\0'));
  EXPECT_EQ(documents(dir / "d.jsonl.gz", FileKind::GzipJsonLines),
            (std::vector<std::string>{"a", "b"}));
  write_gzip_members(dir / "empty.jsonl.gz", {""});
  EXPECT_TRUE(documents(dir / "empty.jsonl.gz", FileKind::GzipJsonLines).empty());
}

TEST(Readers, NonUtf8InAJsonLineNamesTheDecompressedOffset) {
  btm::test::TempDir dir("btm-readers");
  std::string text;
  for (int i = 0; i < 60000; ++i) text += "{\"text\": \"line " + std::to_string(i) + "\"}\n";
  ASSERT_GT(text.size(), 1u << 20);             // past the first read buffer
  const std::size_t offset = text.size() + 10;  // of the 0xFF byte
  text += "{\"text\": \"\xff\"}\n";
  write_gzip_members(dir / "d.jsonl.gz", {text});
  const std::string e = error_of([&] { documents(dir / "d.jsonl.gz", FileKind::GzipJsonLines); });
  EXPECT_NE(e.find((dir / "d.jsonl.gz").string() +
                   ":60001 (decompressed): not valid UTF-8 at byte "
                   "offset " +
                   std::to_string(offset)),
            std::string::npos)
      << e;
  // The same with the byte tokenizer (need_utf8 = false): JSON text must be UTF-8 whatever the
  // tokenizer.
  const std::string e2 = error_of([&] {
    read_documents(dir / "d.jsonl.gz", FileKind::GzipJsonLines, false, UINT64_MAX, {},
                   [](std::string_view) {});
  });
  EXPECT_EQ(e2, e);
}

// A .jsonl.gz is streamed: reading 64 MB of text needs neither the compressed file nor the
// decompressed text in memory at once.
TEST(Readers, LargeGzipIsStreamedInBoundedMemory) {
  btm::test::TempDir dir("btm-readers");
  const fs::path file = dir / "big.jsonl.gz";
  const std::string line = "{\"text\": \"" + std::string(1000, 'z') + "\"}\n";
  const int lines = 64 * 1000;
  {
    gzFile f = gzopen(file.c_str(), "wb1");
    ASSERT_NE(f, nullptr);
    for (int i = 0; i < lines; ++i)
      ASSERT_EQ(gzwrite(f, line.data(), static_cast<unsigned>(line.size())),
                static_cast<int>(line.size()));
    ASSERT_EQ(gzclose(f), Z_OK);
  }
  const std::int64_t before = resident_bytes();
  std::int64_t peak = before;
  std::uint64_t docs = 0, bytes = 0;
  read_documents(file, FileKind::GzipJsonLines, true, UINT64_MAX, {}, [&](std::string_view text) {
    bytes += text.size();
    if (++docs % 1000 == 0) peak = std::max(peak, resident_bytes());
  });
  EXPECT_EQ(docs, static_cast<std::uint64_t>(lines));
  EXPECT_EQ(bytes, static_cast<std::uint64_t>(lines) * 1000);
  EXPECT_LT(peak - before, 24 << 20) << "resident memory grew by " << (peak - before) << " bytes";
}

// --text-key: the text of a JSON line under another member; a line without it names the members
// it has and the option.
TEST(Readers, TextKeyNamesTheJsonMember) {
  EXPECT_EQ(json_line_text(R"({"text": "not this", "content": "this"})", "w", "content"), "this");
  const std::string e =
      error_of([] { json_line_text(R"({"id": 3, "body": "x"})", "f.jsonl:2", "content"); });
  EXPECT_EQ(e.rfind("f.jsonl:2: no \"content\" field", 0), 0u) << e;
  EXPECT_NE(e.find("the members id, body"), std::string::npos) << e;
  EXPECT_NE(e.find("--text-key"), std::string::npos) << e;
  // Past 8 members the list says there are more.
  const std::string many = error_of([] {
    json_line_text(R"({"a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1,"h":1,"i":1})", "w", "text");
  });
  EXPECT_NE(many.find("the members a, b, c, d, e, f, g, h, ...:"), std::string::npos) << many;
  const std::string e2 =
      error_of([] { json_line_text(R"({"content": 5})", "f.jsonl:2", "content"); });
  EXPECT_EQ(e2.rfind("f.jsonl:2: the \"content\" field is not a string", 0), 0u) << e2;

  btm::test::TempDir dir("btm-readers");
  write_bytes(dir / "d.jsonl", "{\"content\": \"a\", \"text\": \"b\"}\n{\"content\": \"c\"}\n");
  ReaderOptions o;
  o.text_key = "content";
  EXPECT_EQ(documents(dir / "d.jsonl", FileKind::JsonLines, UINT64_MAX, o),
            (std::vector<std::string>{"a", "c"}));
  // The default key finds no "text" on the second line.
  EXPECT_NE(error_of([&] {
              documents(dir / "d.jsonl", FileKind::JsonLines);
            }).find("d.jsonl:2: no \"text\" field"),
            std::string::npos);
}

// --split-lines N and --split-blank-lines cut a .txt file into documents: every N lines (the
// last shorter), or at runs of blank lines; pieces of blank lines only are no documents, and the
// text of the documents is the file's, line for line.
TEST(Readers, TextFileCutIntoDocuments) {
  btm::test::TempDir dir("btm-readers");
  const fs::path file = dir / "big.txt";
  write_bytes(file, "a1\na2\n\n\n  \nb1\r\nb2\nb3\n\nc1");
  ReaderOptions lines;
  lines.split_lines = 2;
  EXPECT_EQ(documents(file, FileKind::Text, UINT64_MAX, lines),
            (std::vector<std::string>{"a1\na2\n", "  \nb1\r\n", "b2\nb3\n", "\nc1\n"}));
  EXPECT_EQ(documents(file, FileKind::Text, 2, lines).size(), 2u);  // the limit holds
  lines.split_lines = 100;
  EXPECT_EQ(documents(file, FileKind::Text, UINT64_MAX, lines).size(), 1u);
  ReaderOptions blank;
  blank.split_blank_lines = true;
  EXPECT_EQ(documents(file, FileKind::Text, UINT64_MAX, blank),
            (std::vector<std::string>{"a1\na2\n", "b1\r\nb2\nb3\n", "c1\n"}));
  // Without a cut, the file is one document, as it is.
  EXPECT_EQ(documents(file, FileKind::Text), (std::vector<std::string>{slurp_file(file)}));
  // Cutting applies to .txt files only: a JSON line stays one document.
  write_bytes(dir / "d.jsonl", "{\"text\": \"x\\n\\ny\"}\n");
  EXPECT_EQ(documents(dir / "d.jsonl", FileKind::JsonLines, UINT64_MAX, blank),
            (std::vector<std::string>{"x\n\ny"}));
  // A line that is not UTF-8 is named by its byte offset in the file.
  write_bytes(file, "ok\n\nbad \xff here\n");
  EXPECT_NE(error_of([&] {
              documents(file, FileKind::Text, UINT64_MAX, blank);
            }).find(file.string() + ": not valid UTF-8 at byte offset 8"),
            std::string::npos);
}

TEST(Readers, BadReaderOptionsAreRefused) {
  const auto err = [](ReaderOptions o) { return error_of([&] { check_reader_options(o); }); };
  EXPECT_EQ(err({}), "");
  ReaderOptions o;
  o.text_key = "";
  EXPECT_NE(err(o).find("--text-key"), std::string::npos);
  o = {};
  o.split_lines = -3;
  EXPECT_NE(err(o).find("--split-lines -3"), std::string::npos) << err(o);
  o.split_lines = 4;
  o.split_blank_lines = true;
  EXPECT_NE(err(o).find("give one"), std::string::npos) << err(o);
  EXPECT_EQ(o.txt_documents(), "lines:4");
  o.split_lines = 0;
  EXPECT_EQ(o.txt_documents(), "blank-lines");
  EXPECT_EQ(ReaderOptions{}.txt_documents(), "file");
}

// btm prepare on bad input (one process): every mistake is an InputError that names the path,
// and no corpus file or temporary file is left behind; a good corpus written earlier survives.
#include <gtest/gtest.h>
#include <zlib.h>

#include <fstream>
#include <sstream>

#include "btm/data/corpus.hpp"
#include "btm/data/prepare.hpp"
#include "btm/util/error.hpp"
#include "test_util.hpp"

using namespace btm;
namespace fs = std::filesystem;

namespace {

void write_text(const fs::path& file, const std::string& text) {
  fs::create_directories(file.parent_path());
  std::ofstream(file, std::ios::binary) << text;
}

std::string gzip_bytes(const std::string& text) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&zs, text.size()) + 64, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  zs.avail_in = static_cast<uInt>(text.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

std::string slurp(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

MpiComm& self() {
  static MpiComm comm(MPI_COMM_SELF, false);
  return comm;
}

PrepareOptions byte_options(const fs::path& input, const fs::path& out) {
  PrepareOptions o;
  o.input = input;
  o.out = out;
  o.tokenizer = "byte";
  o.valid_fraction = 0;
  o.test_fraction = 0;
  return o;
}

bool have_gpt2() {
  const fs::path dir = fs::path(btm::test::source_dir()) / "data" / "gpt2";
  const char* env = std::getenv("BTM_GPT2_DIR");
  const fs::path d = env && *env ? fs::path(env) : dir;
  return fs::is_regular_file(d / "encoder.json") && fs::is_regular_file(d / "vocab.bpe");
}

// Runs prepare expecting an InputError whose message contains every one of `needles`; then
// checks that the output directory holds nothing but `allowed` files.
void expect_input_error(const PrepareOptions& o, const std::vector<std::string>& needles,
                        const std::vector<std::string>& allowed = {}) {
  try {
    prepare_corpus(o, self(), nullptr);
    ADD_FAILURE() << "expected an InputError";
  } catch (const InputError& e) {
    const std::string what = e.what();
    for (const auto& needle : needles) EXPECT_NE(what.find(needle), std::string::npos) << what;
  }
  if (fs::is_directory(o.out)) {
    for (const auto& entry : fs::directory_iterator(o.out)) {
      const std::string name = entry.path().filename().string();
      EXPECT_NE(std::find(allowed.begin(), allowed.end(), name), allowed.end())
          << "left behind: " << entry.path();
    }
  }
}

}  // namespace

TEST(PrepareErrors, MissingInputDirectory) {
  btm::test::TempDir dir("btm-prep");
  expect_input_error(byte_options(dir / "nope", dir / "corpus"), {(dir / "nope").string()});
  EXPECT_FALSE(fs::exists(dir / "corpus"));
}

TEST(PrepareErrors, UnknownDomainNamesTheDirectory) {
  btm::test::TempDir dir("btm-prep");
  write_text(dir / "in" / "a" / "x.txt", "hello");
  PrepareOptions o = byte_options(dir / "in", dir / "corpus");
  o.domains = {"a", "b"};
  expect_input_error(o, {(dir / "in" / "b").string(), "a"});
  EXPECT_FALSE(fs::exists(dir / "corpus" / "a.h5"));  // checked before anything is written
}

TEST(PrepareErrors, DomainWithoutUsableFilesOrDocuments) {
  btm::test::TempDir dir("btm-prep");
  write_text(dir / "in" / "a" / "x.txt", "hello");
  write_text(dir / "in" / "empty" / "README.md", "not a document");
  expect_input_error(byte_options(dir / "in", dir / "corpus"),
                     {(dir / "in" / "empty").string(), "no usable files"});
  EXPECT_FALSE(fs::exists(dir / "corpus" / "a.h5"));

  btm::test::TempDir dir2("btm-prep");
  write_text(dir2 / "in" / "blank" / "x.txt", "");
  write_text(dir2 / "in" / "blank" / "y.jsonl", "\n{\"text\": \"\"}\n");
  expect_input_error(byte_options(dir2 / "in", dir2 / "corpus"),
                     {(dir2 / "in" / "blank").string(), "no documents"});
}

TEST(PrepareErrors, OutputPathThatIsAFile) {
  btm::test::TempDir dir("btm-prep");
  write_text(dir / "in" / "a" / "x.txt", "hello");
  write_text(dir / "taken", "a file, not a directory");
  expect_input_error(byte_options(dir / "in", dir / "taken"), {(dir / "taken").string(), "--out"});
}

TEST(PrepareErrors, TooFewDocumentsForTheSplits) {
  btm::test::TempDir dir("btm-prep");
  write_text(dir / "in" / "a" / "x.txt", "one");
  write_text(dir / "in" / "a" / "y.txt", "two");
  PrepareOptions o = byte_options(dir / "in", dir / "corpus");
  o.valid_fraction = 0.05;
  o.test_fraction = 0.05;  // at least one each: nothing left to train on
  expect_input_error(o, {(dir / "in" / "a").string(), "--valid-fraction"});
}

TEST(PrepareErrors, NonUtf8TextNamesFileAndOffsetWithGpt2) {
  if (!have_gpt2()) GTEST_SKIP() << "GPT-2 BPE files absent: run tools/fetch-gpt2-bpe.sh";
  btm::test::TempDir dir("btm-prep");
  write_text(dir / "in" / "a" / "good.txt", "fine text");
  write_text(dir / "in" / "a" / "latin1.txt", "caf\xe9 au lait");
  PrepareOptions o = byte_options(dir / "in", dir / "corpus");
  o.tokenizer = "gpt2";
  expect_input_error(o, {(dir / "in" / "a" / "latin1.txt").string(), "byte offset 3", "UTF-8"});
  // The byte tokenizer takes any bytes.
  o.tokenizer = "byte";
  const auto r = prepare_corpus(o, self(), nullptr);
  ASSERT_EQ(r.size(), 1u);
  const DomainCorpus c = load_corpus(dir / "corpus" / "a.h5", 0);
  EXPECT_EQ(c.info.bytes[0], 9 + 12);
  // good.txt sorts first: "fine text" <eot> "caf" 0xE9 ...
  ASSERT_EQ(c.split(Split::Train).size(), 9u + 1 + 12 + 1);
  EXPECT_EQ(c.split(Split::Train)[9], 256);
  EXPECT_EQ(c.split(Split::Train)[13], 0xe9);
}

TEST(PrepareErrors, NonUtf8InJsonLinesNamesTheLine) {
  if (!have_gpt2()) GTEST_SKIP() << "GPT-2 BPE files absent: run tools/fetch-gpt2-bpe.sh";
  btm::test::TempDir dir("btm-prep");
  write_text(dir / "in" / "a" / "d.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"bad \xff\"}\n");
  PrepareOptions o = byte_options(dir / "in", dir / "corpus");
  o.tokenizer = "gpt2";
  expect_input_error(o, {(dir / "in" / "a" / "d.jsonl").string() + ":2", "UTF-8"});
}

TEST(PrepareErrors, TruncatedAndCorruptGzip) {
  std::string lines;
  for (int i = 0; i < 2000; ++i)
    lines += "{\"text\": \"document number " + std::to_string(i) + "\"}\n";
  const std::string gz = gzip_bytes(lines);
  {
    btm::test::TempDir dir("btm-prep");
    write_text(dir / "in" / "a" / "d.jsonl.gz", gz.substr(0, gz.size() / 2));
    expect_input_error(byte_options(dir / "in", dir / "corpus"),
                       {(dir / "in" / "a" / "d.jsonl.gz").string(), "truncated"});
  }
  {
    btm::test::TempDir dir("btm-prep");
    write_text(dir / "in" / "a" / "d.jsonl.gz", gz.substr(0, gz.size() - 4));  // no length field
    expect_input_error(byte_options(dir / "in", dir / "corpus"),
                       {(dir / "in" / "a" / "d.jsonl.gz").string(), "truncated"});
  }
  {
    btm::test::TempDir dir("btm-prep");
    std::string bad = gz;
    for (std::size_t i = 40; i < 60; ++i) bad[i] = static_cast<char>(bad[i] ^ 0x5A);
    write_text(dir / "in" / "a" / "d.jsonl.gz", bad);
    expect_input_error(byte_options(dir / "in", dir / "corpus"),
                       {(dir / "in" / "a" / "d.jsonl.gz").string(), "gzip"});
  }
  {
    btm::test::TempDir dir("btm-prep");
    write_text(dir / "in" / "a" / "d.jsonl.gz", lines);  // not compressed at all
    expect_input_error(byte_options(dir / "in", dir / "corpus"),
                       {(dir / "in" / "a" / "d.jsonl.gz").string(), "gzip"});
  }
}

TEST(PrepareErrors, JsonLinesWithoutTextOrNotJson) {
  btm::test::TempDir dir("btm-prep");
  write_text(dir / "in" / "a" / "d.jsonl",
             "{\"text\": \"one\"}\n{\"title\": \"no text\", \"n\": [1, {\"x\": null}]}\n");
  expect_input_error(byte_options(dir / "in", dir / "corpus"),
                     {(dir / "in" / "a" / "d.jsonl").string() + ":2", "\"text\""});
  write_text(dir / "in" / "a" / "d.jsonl", "{\"text\": \"one\"}\n\n{\"text\": 5}\n");
  expect_input_error(byte_options(dir / "in", dir / "corpus"),
                     {(dir / "in" / "a" / "d.jsonl").string() + ":3", "not a string"});
  write_text(dir / "in" / "a" / "d.jsonl", "{\"text\": \"unterminated}\n");
  expect_input_error(byte_options(dir / "in", dir / "corpus"),
                     {(dir / "in" / "a" / "d.jsonl").string() + ":1", "JSON"});
}

TEST(PrepareErrors, AFailingRunLeavesTheEarlierCorpusUntouched) {
  btm::test::TempDir dir("btm-prep");
  write_text(dir / "in" / "a" / "x.txt", "first document");
  write_text(dir / "in" / "a" / "y.jsonl", "{\"text\": \"second\"}\n");
  const PrepareOptions o = byte_options(dir / "in", dir / "corpus");
  prepare_corpus(o, self(), nullptr);
  const fs::path file = dir / "corpus" / "a.h5";
  ASSERT_TRUE(fs::exists(file));
  const std::string before = slurp(file);
  const auto mtime = fs::last_write_time(file);

  write_text(dir / "in" / "a" / "z.jsonl", "{\"text\": \"ok\"}\nnot json\n");
  expect_input_error(o, {(dir / "in" / "a" / "z.jsonl").string() + ":2"}, {"a.h5"});
  EXPECT_EQ(slurp(file), before);
  EXPECT_EQ(fs::last_write_time(file), mtime);
  EXPECT_EQ(read_corpus_info(file).docs[0], 2);
}

TEST(PrepareErrors, CommandLineReportsExitCode2) {
  btm::test::TempDir dir("btm-prep");
  const auto r =
      btm::test::run_btm("prepare --tokenizer byte --input " + (dir / "missing").string() +
                         " --out " + (dir / "corpus").string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("btm: error:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find((dir / "missing").string()), std::string::npos) << r.output;
  const auto bad = btm::test::run_btm("prepare --tokenizer byte --input " + dir.path().string() +
                                      " --out x --valid-fraction 0.7 --test-fraction 0.4");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
}

// A domain of one large .txt file is one document, too few to split; cut into documents by lines
// or at blank lines, it splits into train/valid/test, and the corpus records how it was cut.
TEST(PrepareErrors, OneLargeTextFileIsCutIntoDocuments) {
  btm::test::TempDir dir("btm-prep");
  std::string text;
  for (int p = 0; p < 40; ++p) text += "paragraph " + std::to_string(p) + "\nits second line\n\n";
  write_text(dir / "in" / "book" / "all.txt", text);
  PrepareOptions o = byte_options(dir / "in", dir / "corpus");
  o.valid_fraction = 0.1;
  o.test_fraction = 0.1;
  expect_input_error(o, {"has only 1 document", "--split-lines N or --split-blank-lines"});

  o.reader.split_blank_lines = true;
  auto r = prepare_corpus(o, self(), nullptr);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].docs[0], 32);
  EXPECT_EQ(r[0].docs[1], 4);
  EXPECT_EQ(r[0].docs[2], 4);
  // Every byte but the blank lines between paragraphs.
  EXPECT_EQ(r[0].bytes[0] + r[0].bytes[1] + r[0].bytes[2],
            static_cast<std::int64_t>(text.size()) - 40);
  CorpusInfo info = read_corpus_info(dir / "corpus" / "book.h5");
  EXPECT_EQ(info.txt_documents, "blank-lines");
  EXPECT_EQ(info.text_key, "text");

  o.reader.split_blank_lines = false;
  o.reader.split_lines = 6;  // two paragraphs per document
  r = prepare_corpus(o, self(), nullptr);
  EXPECT_EQ(r[0].docs[0] + r[0].docs[1] + r[0].docs[2], 20);
  EXPECT_EQ(r[0].bytes[0] + r[0].bytes[1] + r[0].bytes[2], static_cast<std::int64_t>(text.size()));
  EXPECT_EQ(read_corpus_info(dir / "corpus" / "book.h5").txt_documents, "lines:6");

  // --max-mb counts the cut documents, not the whole file.
  o.max_mb = 200e-6;  // 200 bytes: the first documents only
  r = prepare_corpus(o, self(), nullptr);
  EXPECT_LT(r[0].docs[0] + r[0].docs[1] + r[0].docs[2], 20);
  EXPECT_GE(r[0].bytes[0] + r[0].bytes[1] + r[0].bytes[2], 200);
}

TEST(PrepareErrors, TextKeyReadsAnotherJsonMember) {
  btm::test::TempDir dir("btm-prep");
  write_text(dir / "in" / "a" / "d.jsonl",
             "{\"id\": 1, \"content\": \"one\"}\n{\"id\": 2, \"content\": \"two!\"}\n");
  PrepareOptions o = byte_options(dir / "in", dir / "corpus");
  expect_input_error(o, {(dir / "in" / "a" / "d.jsonl").string() + ":1", "no \"text\" field",
                         "the members id, content", "--text-key"});
  o.reader.text_key = "content";
  const auto r = prepare_corpus(o, self(), nullptr);
  EXPECT_EQ(r[0].docs[0], 2);
  EXPECT_EQ(r[0].bytes[0], 7);
  EXPECT_EQ(read_corpus_info(dir / "corpus" / "a.h5").text_key, "content");
}

TEST(PrepareErrors, BadReaderOptionsOnTheCommandLine) {
  btm::test::TempDir dir("btm-prep");
  write_text(dir / "in" / "a" / "x.txt", "a\n\nb\n");
  const std::string base = "prepare --tokenizer byte --input " + (dir / "in").string() + " --out " +
                           (dir / "corpus").string() + " ";
  for (const std::string& bad : {std::string("--split-lines 0"), std::string("--split-lines -2"),
                                 std::string("--split-lines 3 --split-blank-lines"),
                                 std::string("--split-lines x"), std::string("--text-key ''")}) {
    const auto r = btm::test::run_btm(base + bad);
    EXPECT_EQ(r.exit_code, 2) << bad << "\n" << r.output;
    EXPECT_NE(r.output.find(bad.substr(0, bad.find(' '))), std::string::npos) << r.output;
  }
  EXPECT_FALSE(fs::exists(dir / "corpus" / "a.h5"));
  const auto ok = btm::test::run_btm(base +
                                     "--split-blank-lines --valid-fraction 0 "
                                     "--test-fraction 0");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_EQ(read_corpus_info(dir / "corpus" / "a.h5").docs[0], 2);
}

// btm prepare under MPI (ctest runs this file with 4 ranks): the corpus does not depend on the
// number of ranks, the documents come out whole and in order, and an error found by one rank
// reaches every rank.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <fstream>
#include <map>

#include "btm/data/corpus.hpp"
#include "btm/data/prepare.hpp"
#include "btm/data/tokenizer.hpp"
#include "btm/util/error.hpp"
#include "btm/util/rng.hpp"
#include "mpi_test_util.hpp"
#include "test_util.hpp"

using namespace btm;
namespace fs = std::filesystem;
using btm::test::SharedDir;
using btm::test::world;

namespace {

void write_bytes(const fs::path& file, const std::string& data) {
  fs::create_directories(file.parent_path());
  std::ofstream(file, std::ios::binary) << data;
}

void write_gzip(const fs::path& file, const std::string& text) {
  fs::create_directories(file.parent_path());
  gzFile f = gzopen(file.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, text.data(), static_cast<unsigned>(text.size())),
            static_cast<int>(text.size()));
  gzclose(f);
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\')
      out += '\\', out += c;
    else if (c == '\n')
      out += "\\n";
    else if (c == '\t')
      out += "\\t";
    else
      out += c;
  }
  return out;
}

// Random words with some punctuation, newlines and non-ASCII letters.
std::string random_document(Rng& rng, std::size_t words) {
  static const char* vocab[] = {"the",   "merge", "branch", "train", "expert", "domain",
                                "naïve", "café",  "λόγος",  "2023",  "can't",  "x+y",
                                "()",    "\n",    "  ",     "!"};
  std::string doc;
  for (std::size_t i = 0; i < words; ++i) {
    if (i) doc += ' ';
    doc += vocab[rng.next_u64() % std::size(vocab)];
  }
  return doc;
}

// The documents of the synthetic input, by domain, in the order prepare must keep: files sorted
// by path, then lines.
using Documents = std::map<std::string, std::vector<std::string>>;

// Three domains of .txt, .jsonl and .jsonl.gz files of very different sizes (made by the
// caller's rank 0 only).
Documents make_input(const fs::path& input) {
  Documents docs;
  Rng rng(77);
  // "alpha": many small .txt files and one big one, in a nested directory too.
  for (int i = 0; i < 23; ++i) {
    const std::string name = "f" + std::to_string(100 + i) + ".txt";
    const std::string doc = random_document(rng, i == 5 ? 4000 : 5 + rng.next_u64() % 60);
    write_bytes(input / "alpha" / name, doc);
  }
  write_bytes(input / "alpha" / "sub" / "g.txt", random_document(rng, 30));
  write_bytes(input / "alpha" / "notes.md", "ignored: not a document");
  write_bytes(input / "alpha" / "SOURCE", "synthetic alpha text\n");
  std::vector<std::string> names;
  for (const auto& e : fs::recursive_directory_iterator(input / "alpha"))
    if (e.is_regular_file() && e.path().extension() == ".txt")
      names.push_back(fs::relative(e.path(), input / "alpha").generic_string());
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    std::ifstream in(input / "alpha" / n, std::ios::binary);
    docs["alpha"].emplace_back(std::istreambuf_iterator<char>(in),
                               std::istreambuf_iterator<char>());
  }
  // "beta": JSON lines, plain and gzip-compressed.
  for (int f = 0; f < 5; ++f) {
    std::string lines;
    std::vector<std::string> file_docs;
    const int n = 3 + static_cast<int>(rng.next_u64() % 40);
    for (int d = 0; d < n; ++d) {
      const std::string doc = random_document(rng, 3 + rng.next_u64() % 80);
      lines += "{\"id\": " + std::to_string(d) + ", \"text\": \"" + json_escape(doc) +
               "\", \"meta\": {\"tags\": [\"a\", 1.5, null]}}\n";
      file_docs.push_back(doc);
    }
    const std::string name = "part" + std::to_string(f);
    if (f % 2)
      write_gzip(input / "beta" / (name + ".jsonl.gz"), lines);
    else
      write_bytes(input / "beta" / (name + ".jsonl"), lines);
    docs["beta"].insert(docs["beta"].end(), file_docs.begin(), file_docs.end());
  }
  // "gamma": one file only (all on one rank, others idle).
  std::string lines;
  for (int d = 0; d < 30; ++d) {
    const std::string doc = random_document(rng, 10);
    lines += "{\"text\": \"" + json_escape(doc) + "\"}\n";
    docs["gamma"].push_back(doc);
  }
  write_bytes(input / "gamma" / "only.jsonl", lines);
  return docs;
}

PrepareOptions options_for(const fs::path& input, const fs::path& out,
                           const std::string& tokenizer) {
  PrepareOptions o;
  o.input = input;
  o.out = out;
  o.tokenizer = tokenizer;
  o.valid_fraction = 0.1;
  o.test_fraction = 0.1;
  o.seed = 9;
  return o;
}

bool have_gpt2() {
  const char* env = std::getenv("BTM_GPT2_DIR");
  const fs::path d =
      env && *env ? fs::path(env) : fs::path(btm::test::source_dir()) / "data" / "gpt2";
  return fs::is_regular_file(d / "encoder.json") && fs::is_regular_file(d / "vocab.bpe");
}

void expect_same_corpus(const fs::path& a, const fs::path& b) {
  const DomainCorpus x = load_corpus(a, 0), y = load_corpus(b, 0);
  EXPECT_EQ(x.info.domain, y.info.domain);
  EXPECT_EQ(x.info.tokenizer, y.info.tokenizer);
  EXPECT_EQ(x.info.vocab_size, y.info.vocab_size);
  EXPECT_EQ(x.info.eot_token, y.info.eot_token);
  EXPECT_EQ(x.info.source, y.info.source);
  for (int s = 0; s < 3; ++s) {
    EXPECT_EQ(x.info.docs[s], y.info.docs[s]) << a;
    EXPECT_EQ(x.info.bytes[s], y.info.bytes[s]) << a;
    ASSERT_EQ(x.splits[s].size(), y.splits[s].size()) << a << " split " << s;
    EXPECT_TRUE(
        std::equal(x.splits[s].data(), x.splits[s].data() + x.splits[s].size(), y.splits[s].data()))
        << a << " split " << s;
  }
}

}  // namespace

// World rank 0 alone and world ranks 1-3 together prepare the same input at the same time.
TEST(PrepareMpi, OneRankAndThreeRanksWriteIdenticalCorpora) {
  ASSERT_EQ(world().size(), 4) << "run with mpiexec -n 4";
  SharedDir dir(world());
  if (world().rank() == 0) make_input(dir / "in");
  world().barrier();
  const auto group = world().split(world().rank() == 0 ? 0 : 1, world().rank());
  const std::string out = world().rank() == 0 ? "one" : "three";
  std::vector<std::string> tokenizers = {"byte"};
  if (have_gpt2()) tokenizers.push_back("gpt2");
  for (const std::string& tokenizer : tokenizers) {
    for (const double cap : {0.0, 0.004}) {
      PrepareOptions o = options_for(dir / "in", dir / (out + "-" + tokenizer), tokenizer);
      o.max_mb = cap;
      const auto results = prepare_corpus(o, *group, nullptr);
      ASSERT_EQ(results.size(), 3u);
      world().barrier();
      if (world().rank() == 0) {
        for (const char* domain : {"alpha", "beta", "gamma"})
          expect_same_corpus(corpus_path(dir / ("one-" + tokenizer), domain),
                             corpus_path(dir / ("three-" + tokenizer), domain));
        if (cap > 0) {
          // The cap keeps a prefix of the documents: at least the cap, at most one document more.
          const CorpusInfo beta = read_corpus_info(corpus_path(dir / ("one-" + tokenizer), "beta"));
          const std::int64_t bytes = beta.bytes[0] + beta.bytes[1] + beta.bytes[2];
          EXPECT_GE(bytes, 4000);
          EXPECT_LT(bytes, 4000 + 1500);
        }
      }
      world().barrier();
    }
  }
}

// All four ranks: the documents come out whole, in input order inside each split, split by the
// requested fractions, each ending with end-of-text.
TEST(PrepareMpi, DocumentsAreWholeOrderedAndSplit) {
  SharedDir dir(world());
  Documents expected;
  if (world().rank() == 0) expected = make_input(dir / "in");
  world().barrier();
  const PrepareOptions o = options_for(dir / "in", dir / "corpus", "byte");
  const auto results = prepare_corpus(o, world(), nullptr);
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0].domain, "alpha");
  if (world().rank() != 0) return;
  auto tokenizer = make_tokenizer("byte");
  for (const auto& [domain, docs] : expected) {
    const DomainCorpus c = load_corpus(corpus_path(dir / "corpus", domain), 257);
    std::vector<std::string> seen[3];
    for (int s = 0; s < 3; ++s) {
      for (const auto& [begin, end] : document_spans(c.splits[s], 256)) {
        ASSERT_EQ(c.splits[s][end - 1], 256) << domain << ": a document without end-of-text";
        seen[s].push_back(tokenizer->decode(
            std::span<const std::uint16_t>(c.splits[s].data() + begin, end - begin - 1)));
      }
      EXPECT_EQ(static_cast<std::int64_t>(seen[s].size()), c.info.docs[s]);
    }
    const std::size_t n = docs.size();
    const auto expected_count = [n](double f) {
      return std::max<std::size_t>(
          1, static_cast<std::size_t>(std::llround(f * static_cast<double>(n))));
    };
    EXPECT_EQ(seen[1].size(), expected_count(0.1)) << domain;
    EXPECT_EQ(seen[2].size(), expected_count(0.1)) << domain;
    // Every input document is in exactly one split, and each split keeps the input order.
    std::size_t next[3] = {0, 0, 0};
    for (const std::string& doc : docs) {
      int found = -1;
      for (int s = 0; s < 3; ++s)
        if (next[s] < seen[s].size() && seen[s][next[s]] == doc) {
          found = s;
          break;
        }
      ASSERT_GE(found, 0) << domain << ": document missing or out of order";
      ++next[found];
    }
    for (int s = 0; s < 3; ++s) EXPECT_EQ(next[s], seen[s].size()) << domain;
    std::int64_t bytes = 0;
    for (const auto& doc : docs) bytes += static_cast<std::int64_t>(doc.size());
    EXPECT_EQ(c.info.bytes[0] + c.info.bytes[1] + c.info.bytes[2], bytes);
  }
  EXPECT_NE(
      read_corpus_info(corpus_path(dir / "corpus", "alpha")).source.find("synthetic alpha text"),
      std::string::npos);
}

// A corrupt file that only some rank reads: every rank throws the same InputError (none hangs)
// and the domain is not written.
TEST(PrepareMpi, AnErrorOnOneRankReachesEveryRank) {
  SharedDir dir(world());
  if (world().rank() == 0) {
    for (int i = 0; i < 12; ++i)
      write_bytes(
          dir / "in" / "a" / ("f" + std::to_string(i) + ".jsonl"),
          std::string(100 + static_cast<std::size_t>(i) * 37, ' ') + "{\"text\": \"doc\"}\n");
    // The smallest file goes last in the size-greedy assignment: not to rank 0.
    write_bytes(dir / "in" / "a" / "z.jsonl", "{\"no_text\": 1}\n");
  }
  world().barrier();
  PrepareOptions o = options_for(dir / "in", dir / "corpus", "byte");
  o.valid_fraction = o.test_fraction = 0;
  std::string message;
  try {
    prepare_corpus(o, world(), nullptr);
  } catch (const InputError& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("z.jsonl:1"), std::string::npos)
      << "rank " << world().rank() << ": " << message;
  // Every rank got the same message.
  std::uint64_t hash = std::hash<std::string>{}(message), max_hash = 0;
  MPI_Allreduce(&hash, &max_hash, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
  EXPECT_EQ(hash, max_hash);
  world().barrier();
  EXPECT_FALSE(fs::exists(corpus_path(dir / "corpus", "a")));
}

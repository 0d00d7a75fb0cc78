// The byte tokenizer and GPT-2's byte-level BPE (encoder.json through nlohmann::json, vocab.bpe,
// the pre-tokenisation regex through PCRE2), and make_tokenizer.
#include "btm/data/tokenizer.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <mutex>
#include <queue>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "btm/data/readers.hpp"
#include "btm/data/utf8.hpp"
#include "btm/util/error.hpp"
#include "json_error.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

// The hash of Tokenizer::vocab_hash, fed piece by piece.
class VocabHash {
 public:
  void token(std::string_view bytes) {
    const auto n = static_cast<std::uint32_t>(bytes.size());
    for (int i = 0; i < 4; ++i) byte(static_cast<unsigned char>(n >> (8 * i)));
    for (char c : bytes) byte(static_cast<unsigned char>(c));
  }
  void merge(std::uint16_t left, std::uint16_t right) {
    for (std::uint16_t id : {left, right}) {
      byte(static_cast<unsigned char>(id & 0xFF));
      byte(static_cast<unsigned char>(id >> 8));
    }
  }
  std::string text() const {
    char out[32];
    std::snprintf(out, sizeof(out), "fnv1a64:%016llx", static_cast<unsigned long long>(h_));
    return out;
  }

 private:
  void byte(unsigned char c) { h_ = (h_ ^ c) * 0x100000001b3ull; }
  std::uint64_t h_ = 0xcbf29ce484222325ull;
};

// ---------------------------------------------------------------------------------------------
// byte: ids 0..255 are the bytes, 256 is end-of-text.
// ---------------------------------------------------------------------------------------------
class ByteTokenizer final : public Tokenizer {
 public:
  std::string name() const override { return "byte"; }
  int vocab_size() const override { return 257; }
  int eot_token() const override { return 256; }
  std::string vocab_hash() const override {
    VocabHash h;
    for (int b = 0; b < 256; ++b) h.token(std::string(1, static_cast<char>(b)));
    h.token("<|endoftext|>");
    return h.text();
  }
  void encode(std::string_view text, std::vector<std::uint16_t>& out) const override {
    out.reserve(out.size() + text.size());
    for (char c : text) out.push_back(static_cast<unsigned char>(c));
  }
  std::string decode(std::span<const std::uint16_t> ids) const override {
    std::string text;
    text.reserve(ids.size());
    for (std::uint16_t id : ids) {
      if (id < 256)
        text += static_cast<char>(id);
      else if (id == 256)
        text += "<|endoftext|>";
      else
        throw InputError("byte tokenizer: token id " + std::to_string(id) +
                         " is out of range (vocab 257)");
    }
    return text;
  }
};

// ---------------------------------------------------------------------------------------------
// gpt2: byte-level BPE.
// ---------------------------------------------------------------------------------------------

// GPT-2's bytes_to_unicode(): printable bytes stand for themselves, the others are shifted to
// code points 256.. so that every byte is a visible character in encoder.json / vocab.bpe.
std::array<char32_t, 256> bytes_to_unicode() {
  std::array<char32_t, 256> table{};
  std::array<bool, 256> printable{};
  for (int b = '!'; b <= '~'; ++b) printable[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) table[b] = printable[b] ? static_cast<char32_t>(b) : next++;
  return table;
}

// Code points of encoder.json / vocab.bpe back to the raw bytes they stand for.
class ByteDecoder {
 public:
  ByteDecoder() {
    const auto table = bytes_to_unicode();
    to_byte_.fill(-1);
    for (int b = 0; b < 256; ++b) to_byte_[table[b]] = b;
  }
  // Raw bytes of a string of mapped code points; false if a code point is not in the table.
  bool decode(const std::u32string& mapped, std::string& raw) const {
    raw.clear();
    for (char32_t c : mapped) {
      if (c >= to_byte_.size() || to_byte_[c] < 0) return false;
      raw += static_cast<char>(to_byte_[c]);
    }
    return true;
  }

 private:
  std::array<int, 512> to_byte_{};
};

// encoder.json: one flat JSON object of string -> token id. Keys are returned as code points.
std::vector<std::pair<std::u32string, int>> read_encoder_json(const fs::path& file) {
  const auto fail = [&](const std::string& what) {
    return InputError(file.string() + ": not a GPT-2 encoder.json (" + what +
                      "): run tools/fetch-gpt2-bpe.sh again");
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_whole_file(file));
  } catch (const nlohmann::json::parse_error& e) {
    throw fail("not valid JSON: " + json_parse_error_detail(e.what()) + " at byte " +
               std::to_string(e.byte));
  }
  if (!j.is_object()) throw fail("not a JSON object");
  std::vector<std::pair<std::u32string, int>> entries;
  entries.reserve(j.size());
  for (const auto& [key, value] : j.items()) {
    if (!value.is_number_integer()) throw fail("the value of a key is not a token id");
    const auto id = value.get<std::int64_t>();
    if (id < 0 || id > 65535)
      throw InputError(file.string() + ": token id " + std::to_string(id) +
                       " does not fit 16 bits");
    std::u32string mapped;
    if (!decode_utf8(key, mapped)) throw fail("a key is not valid UTF-8");
    entries.emplace_back(std::move(mapped), static_cast<int>(id));
  }
  return entries;
}

// A thread-safe memo of piece -> ids, sharded so that threads rarely wait on one another and
// bounded so that a huge corpus cannot grow it without limit.
class PieceCache {
 public:
  static constexpr std::size_t kMaxPieceBytes = 64;

  bool find(std::string_view piece, std::vector<std::uint16_t>& out) const {
    if (piece.size() > kMaxPieceBytes) return false;
    Shard& shard = shard_for(piece);
    std::lock_guard<std::mutex> lock(shard.mutex);
    auto it = shard.map.find(std::string(piece));
    if (it == shard.map.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void insert(std::string_view piece, std::span<const std::uint16_t> ids) const {
    if (piece.size() > kMaxPieceBytes) return;
    Shard& shard = shard_for(piece);
    std::lock_guard<std::mutex> lock(shard.mutex);
    if (shard.map.size() >= kMaxEntriesPerShard) shard.map.clear();
    shard.map.emplace(std::string(piece), std::vector<std::uint16_t>(ids.begin(), ids.end()));
  }

 private:
  static constexpr std::size_t kShards = 32;
  static constexpr std::size_t kMaxEntriesPerShard = 1 << 15;
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<std::uint16_t>> map;
  };
  Shard& shard_for(std::string_view piece) const {
    return shards_[std::hash<std::string_view>{}(piece) % kShards];
  }
  mutable std::array<Shard, kShards> shards_;
};

// GPT-2's pre-tokeniser (Python `regex` in OpenAI's encoder.py), compiled once with PCRE2 in
// UTF + UCP mode. PCRE2_MATCH_INVALID_UTF lets it run over any bytes: invalid UTF-8 never
// matches, so it shows up as gaps between matches, which the encoder keeps as pieces of their
// own (every byte string round-trips).
class Gpt2Pretokenizer {
 public:
  Gpt2Pretokenizer() {
    static const char* kPattern =
        R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
    if (!code_) throw SystemError("pcre2_compile of the GPT-2 pattern failed: " + message(error));
    // JIT is optional (not every build has it); the interpreter gives the same matches.
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);
  }
  ~Gpt2Pretokenizer() { pcre2_code_free(code_); }
  Gpt2Pretokenizer(const Gpt2Pretokenizer&) = delete;
  Gpt2Pretokenizer& operator=(const Gpt2Pretokenizer&) = delete;

  // Calls piece(begin, end) for consecutive pieces covering all of `text`.
  template <typename Fn>
  void split(std::string_view text, Fn&& piece) const {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
        pcre2_match_data_create(1, nullptr), &pcre2_match_data_free);
    if (!match) throw SystemError("pcre2_match_data_create: out of memory");
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    std::size_t pos = 0;
    while (pos < text.size()) {
      const int rc = pcre2_match(code_, subject, text.size(), pos, 0, match.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) {
        piece(pos, text.size());  // trailing invalid bytes
        return;
      }
      if (rc < 0) throw SystemError("pcre2_match failed: " + message(rc));
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
      const std::size_t begin = ovector[0], end = ovector[1];
      if (begin > pos) piece(pos, begin);  // invalid bytes between two matches
      if (end == begin) throw SystemError("GPT-2 pattern matched an empty string");
      piece(begin, end);
      pos = end;
    }
  }

 private:
  static std::string message(int code) {
    PCRE2_UCHAR buffer[256];
    pcre2_get_error_message(code, buffer, sizeof(buffer));
    return reinterpret_cast<const char*>(buffer);
  }
  pcre2_code* code_ = nullptr;
};

class Gpt2Tokenizer final : public Tokenizer {
 public:
  explicit Gpt2Tokenizer(const fs::path& dir) {
    load_encoder(dir / "encoder.json");
    VocabHash hash;
    for (const std::string& bytes : id_bytes_) hash.token(bytes);
    load_merges(dir / "vocab.bpe", hash);
    vocab_hash_ = hash.text();
  }

  std::string name() const override { return "gpt2"; }
  int vocab_size() const override { return static_cast<int>(id_bytes_.size()); }
  int eot_token() const override { return eot_; }
  std::string vocab_hash() const override { return vocab_hash_; }

  void encode(std::string_view text, std::vector<std::uint16_t>& out) const override {
    pretokenizer_.split(text, [&](std::size_t begin, std::size_t end) {
      const std::string_view piece = text.substr(begin, end - begin);
      if (cache_.find(piece, out)) return;
      const std::size_t first = out.size();
      bpe(piece, out);
      cache_.insert(piece, std::span<const std::uint16_t>(out).subspan(first));
    });
  }

  std::string decode(std::span<const std::uint16_t> ids) const override {
    std::string text;
    for (std::uint16_t id : ids) {
      if (id >= id_bytes_.size())
        throw InputError("gpt2 tokenizer: token id " + std::to_string(id) +
                         " is out of range (vocab " + std::to_string(id_bytes_.size()) + ")");
      text += id_bytes_[id];
    }
    return text;
  }

 private:
  struct Merge {
    int rank;
    std::uint16_t merged;
  };
  static std::uint64_t pair_key(std::uint16_t left, std::uint16_t right) {
    return (static_cast<std::uint64_t>(left) << 16) | right;
  }

  void load_encoder(const fs::path& file) {
    const auto entries = read_encoder_json(file);
    const ByteDecoder bytes;
    std::string raw;
    for (const auto& [mapped, id] : entries) {
      if (mapped == U"<|endoftext|>") eot_ = id;
      if (!bytes.decode(mapped, raw))
        throw InputError(file.string() + ": a key holds a character outside GPT-2's byte table");
      if (static_cast<std::size_t>(id) >= id_bytes_.size())
        id_bytes_.resize(static_cast<std::size_t>(id) + 1);
      id_bytes_[static_cast<std::size_t>(id)] = raw;
      ids_.emplace(raw, static_cast<std::uint16_t>(id));
    }
    for (int b = 0; b < 256; ++b) {
      auto it = ids_.find(std::string(1, static_cast<char>(b)));
      if (it == ids_.end())
        throw InputError(file.string() + ": byte " + std::to_string(b) + " has no token");
      byte_ids_[b] = it->second;
    }
    if (eot_ < 0) throw InputError(file.string() + ": no <|endoftext|> token");
    // A special token must never come out of merges: keep it out of the bytes -> id table.
    ids_.erase("<|endoftext|>");
  }

  void load_merges(const fs::path& file, VocabHash& hash) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw InputError(file.string() + ": cannot open for reading");
    const ByteDecoder bytes;
    std::string line, left_raw, right_raw;
    std::u32string left, right;
    int rank = 0;
    int line_no = 0;
    while (std::getline(in, line)) {
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty() || line.rfind("#version", 0) == 0) continue;
      const std::size_t space = line.find(' ');
      const auto bad = [&](const std::string& what) {
        return InputError(file.string() + ":" + std::to_string(line_no) + ": " + what +
                          ": run tools/fetch-gpt2-bpe.sh again");
      };
      if (space == std::string::npos || space == 0 || space + 1 == line.size())
        throw bad("expected two symbols");
      if (!decode_utf8(std::string_view(line).substr(0, space), left) ||
          !decode_utf8(std::string_view(line).substr(space + 1), right) ||
          !bytes.decode(left, left_raw) || !bytes.decode(right, right_raw))
        throw bad("a symbol is not in GPT-2's byte table");
      const auto l = ids_.find(left_raw), r = ids_.find(right_raw),
                 m = ids_.find(left_raw + right_raw);
      if (l == ids_.end() || r == ids_.end() || m == ids_.end())
        throw bad("a merge names a token missing from encoder.json");
      merges_.emplace(pair_key(l->second, r->second), Merge{rank, m->second});
      hash.merge(l->second, r->second);
      ++rank;
    }
    if (rank == 0)
      throw InputError(file.string() + ": no merges: run tools/fetch-gpt2-bpe.sh again");
  }

  // Byte-pair merging of one piece, lowest rank first (leftmost among equal ranks), as in
  // OpenAI's encoder.py. A heap over a linked list of symbols keeps long pieces O(n log n).
  void bpe(std::string_view piece, std::vector<std::uint16_t>& out) const {
    const std::size_t n = piece.size();
    if (n == 0) return;
    if (n == 1) {
      out.push_back(byte_ids_[static_cast<unsigned char>(piece[0])]);
      return;
    }
    struct Symbol {
      std::uint16_t id;
      int prev, next;
    };
    struct Candidate {
      int rank;
      int left;  // position of the left symbol
      std::uint16_t left_id, right_id, merged;
      bool operator>(const Candidate& o) const {
        return rank != o.rank ? rank > o.rank : left > o.left;
      }
    };
    std::vector<Symbol> symbols(n);
    for (std::size_t i = 0; i < n; ++i)
      symbols[i] = {byte_ids_[static_cast<unsigned char>(piece[i])], static_cast<int>(i) - 1,
                    i + 1 < n ? static_cast<int>(i + 1) : -1};
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
    auto consider = [&](int left) {
      const int right = symbols[static_cast<std::size_t>(left)].next;
      if (right < 0) return;
      const std::uint16_t a = symbols[static_cast<std::size_t>(left)].id;
      const std::uint16_t b = symbols[static_cast<std::size_t>(right)].id;
      auto it = merges_.find(pair_key(a, b));
      if (it != merges_.end()) heap.push({it->second.rank, left, a, b, it->second.merged});
    };
    for (std::size_t i = 0; i + 1 < n; ++i) consider(static_cast<int>(i));
    std::vector<bool> alive(n, true);
    while (!heap.empty()) {
      const Candidate c = heap.top();
      heap.pop();
      Symbol& left = symbols[static_cast<std::size_t>(c.left)];
      // Stale entries: the left symbol was merged away or either side changed since.
      if (!alive[static_cast<std::size_t>(c.left)] || left.id != c.left_id || left.next < 0)
        continue;
      Symbol& right = symbols[static_cast<std::size_t>(left.next)];
      if (right.id != c.right_id) continue;
      left.id = c.merged;
      alive[static_cast<std::size_t>(left.next)] = false;
      left.next = right.next;
      if (right.next >= 0) symbols[static_cast<std::size_t>(right.next)].prev = c.left;
      if (left.prev >= 0) consider(left.prev);
      consider(c.left);
    }
    for (int i = 0; i >= 0; i = symbols[static_cast<std::size_t>(i)].next)
      out.push_back(symbols[static_cast<std::size_t>(i)].id);
  }

  std::vector<std::string> id_bytes_;                   // id -> raw bytes
  std::unordered_map<std::string, std::uint16_t> ids_;  // raw bytes -> id
  std::array<std::uint16_t, 256> byte_ids_{};           // byte -> its one-byte token
  std::unordered_map<std::uint64_t, Merge> merges_;     // (left, right) -> rank, result
  std::string vocab_hash_;
  int eot_ = -1;
  Gpt2Pretokenizer pretokenizer_;
  PieceCache cache_;
};

fs::path default_gpt2_dir() {
  if (const char* env = std::getenv("BTM_GPT2_DIR"); env && *env) return env;
  return fs::path(BTM_SOURCE_DIR) / "data" / "gpt2";
}

}  // namespace

fs::path gpt2_bpe_dir(const fs::path& bpe_dir) {
  const fs::path dir = bpe_dir.empty() ? default_gpt2_dir() : bpe_dir;
  for (const char* file : {"encoder.json", "vocab.bpe"}) {
    if (!fs::is_regular_file(dir / file))
      throw InputError("gpt2 tokenizer: " + (dir / file).string() +
                       " not found: run tools/fetch-gpt2-bpe.sh " + dir.string() +
                       (bpe_dir.empty() ? " (or point --bpe-dir or BTM_GPT2_DIR at a directory "
                                          "holding encoder.json and vocab.bpe)"
                                        : ""));
  }
  return dir;
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const fs::path& bpe_dir) {
  if (name == "byte") return std::make_unique<ByteTokenizer>();
  if (name == "gpt2") return std::make_unique<Gpt2Tokenizer>(gpt2_bpe_dir(bpe_dir));
  throw InputError("unknown tokenizer '" + name + "' (use byte or gpt2)");
}

std::uint64_t vocabulary_hash(const Tokenizer& tokenizer) {
  std::uint64_t h = 1469598103934665603ull;
  for (int id = 0; id < tokenizer.vocab_size(); ++id) {
    const std::uint16_t one[1] = {static_cast<std::uint16_t>(id)};
    // Each id's text, then a separator no text byte sequence can fake (its length).
    const std::string text = tokenizer.decode(one);
    for (char c : text) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    h = (h ^ text.size()) * 1099511628211ull;
  }
  return h;
}

}  // namespace btm

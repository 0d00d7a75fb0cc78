// prepare.cpp: reading text (.txt, .jsonl, .jsonl.gz), tokenizing it over MPI ranks and
// writing per-domain corpora (the commands: app/prepare_command.cpp).
#include "btm/data/prepare.hpp"

#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <limits>
#include <memory>
#include <numeric>
#include <sstream>

#include "btm/data/corpus.hpp"
#include "btm/data/tokenizer.hpp"
#include "btm/util/error.hpp"
#include "btm/util/rng.hpp"

namespace btm {

namespace fs = std::filesystem;

void append_utf8(char32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::size_t first_invalid_utf8(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    char32_t min;
    char32_t cp;
    if ((c & 0xE0) == 0xC0)
      len = 2, min = 0x80, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0)
      len = 3, min = 0x800, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0)
      len = 4, min = 0x10000, cp = c & 0x07;
    else
      return i;
    if (i + len > n) return i;
    for (std::size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string_view::npos;
}

namespace {

constexpr double kMB = 1e6;

// ---------------------------------------------------------------------------------------------
// Reading documents
// ---------------------------------------------------------------------------------------------

enum class FileKind { Text, JsonLines, GzipJsonLines };

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool usable_kind(const std::string& name, FileKind& kind) {
  if (ends_with(name, ".txt"))
    kind = FileKind::Text;
  else if (ends_with(name, ".jsonl"))
    kind = FileKind::JsonLines;
  else if (ends_with(name, ".jsonl.gz"))
    kind = FileKind::GzipJsonLines;
  else
    return false;
  return true;
}

std::string read_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(file.string() + ": cannot open for reading");
  std::string data;
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) throw InputError(file.string() + ": cannot read");
  data.resize(static_cast<std::size_t>(size));
  in.seekg(0);
  if (!in.read(data.data(), size)) throw InputError(file.string() + ": read failed");
  return data;
}

// Whole-file gunzip (several gzip members are read one after another, as gzip -d does).
std::string gunzip(const std::string& compressed, const fs::path& file) {
  const auto corrupt = [&](const std::string& what) {
    return InputError(file.string() + ": " + what +
                      ": the gzip file is damaged; re-create or re-download it");
  };
  if (compressed.empty()) throw corrupt("empty file, not gzip data");
  z_stream zs{};
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw SystemError("zlib inflateInit2 failed");
  std::unique_ptr<z_stream, int (*)(z_stream*)> guard(&zs, &inflateEnd);
  std::string out;
  std::vector<unsigned char> buffer(1 << 20);
  std::size_t in_pos = 0;
  bool in_member = true;
  while (true) {
    if (zs.avail_in == 0 && in_pos < compressed.size()) {
      const std::size_t chunk = std::min<std::size_t>(compressed.size() - in_pos, 1u << 30);
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data() + in_pos));
      zs.avail_in = static_cast<uInt>(chunk);
      in_pos += chunk;
    }
    zs.next_out = buffer.data();
    zs.avail_out = static_cast<uInt>(buffer.size());
    const int rc = inflate(&zs, Z_NO_FLUSH);
    out.append(reinterpret_cast<const char*>(buffer.data()), buffer.size() - zs.avail_out);
    if (rc == Z_STREAM_END) {
      in_member = false;
      const std::size_t left = zs.avail_in + (compressed.size() - in_pos);
      if (left == 0) break;
      // Trailing zero padding (tape blocks) is ignored, as by gzip; anything else is a member.
      const std::size_t offset = compressed.size() - left;
      if (compressed.find_first_not_of('\0', offset) == std::string::npos) break;
      if (inflateReset(&zs) != Z_OK) throw SystemError("zlib inflateReset failed");
      in_member = true;
      continue;
    }
    if (rc == Z_OK) continue;
    if (rc == Z_BUF_ERROR && zs.avail_in == 0) {
      if (in_pos < compressed.size()) continue;  // feed the next input chunk
      break;                                     // input used up inside a member: truncated
    }
    throw corrupt(std::string("corrupt gzip data (") + (zs.msg ? zs.msg : "zlib error") + ")");
  }
  if (in_member)
    throw corrupt("truncated gzip data (the stream ends before its end marker, after " +
                  std::to_string(out.size()) + " bytes)");
  return out;
}

// A JSON object on one line; only its top-level "text" string is decoded, the rest is checked
// and skipped.
class JsonLine {
 public:
  JsonLine(std::string_view line, std::string where) : s_(line), where_(std::move(where)) {}

  // The "text" field; InputError if the line is not a JSON object or has no "text" string.
  std::string text_field() {
    skip_space();
    expect('{');
    std::string text;
    bool found = false;
    skip_space();
    if (peek() == '}') {
      ++pos_;
    } else {
      while (true) {
        skip_space();
        std::string key;
        read_string(&key);
        skip_space();
        expect(':');
        skip_space();
        if (key == "text" && !found) {
          if (peek() != '"') throw error("the \"text\" field is not a string");
          read_string(&text);
          found = true;
        } else {
          skip_value(0);
        }
        skip_space();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        expect('}');
        break;
      }
    }
    skip_space();
    if (pos_ != s_.size()) throw error("extra characters after the JSON object");
    if (!found)
      throw error("no \"text\" field (every line must be a JSON object with a \"text\" string)");
    return text;
  }

 private:
  InputError error(const std::string& what) const {
    return InputError(where_ + ": " + what + " (at column " + std::to_string(pos_ + 1) + ")");
  }
  char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void expect(char c) {
    if (peek() != c) {
      if (pos_ >= s_.size())
        throw error(std::string("not valid JSON: the line ends where '") + c + "' was expected");
      throw error(std::string("not valid JSON: expected '") + c + "'");
    }
    ++pos_;
  }
  void skip_space() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\r' || s_[pos_] == '\n'))
      ++pos_;
  }
  unsigned hex4() {
    if (pos_ + 4 > s_.size()) throw error("not valid JSON: short \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = s_[pos_++];
      v <<= 4;
      if (h >= '0' && h <= '9')
        v |= static_cast<unsigned>(h - '0');
      else if (h >= 'a' && h <= 'f')
        v |= static_cast<unsigned>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F')
        v |= static_cast<unsigned>(h - 'A' + 10);
      else
        throw error("not valid JSON: bad \\u escape");
    }
    return v;
  }

  // Reads a string into *out (nullptr: skips it).
  void read_string(std::string* out) {
    expect('"');
    while (true) {
      const std::size_t run = s_.find_first_of("\"\\", pos_);
      if (run == std::string_view::npos) throw error("not valid JSON: unterminated string");
      if (out) out->append(s_.data() + pos_, run - pos_);
      pos_ = run + 1;
      if (s_[run] == '"') return;
      if (pos_ >= s_.size()) throw error("not valid JSON: unterminated string");
      const char e = s_[pos_++];
      char plain = 0;
      switch (e) {
        case '"':
          plain = '"';
          break;
        case '\\':
          plain = '\\';
          break;
        case '/':
          plain = '/';
          break;
        case 'b':
          plain = '\b';
          break;
        case 'f':
          plain = '\f';
          break;
        case 'n':
          plain = '\n';
          break;
        case 'r':
          plain = '\r';
          break;
        case 't':
          plain = '\t';
          break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00) {
            if (pos_ + 2 > s_.size() || s_[pos_] != '\\' || s_[pos_ + 1] != 'u')
              throw error("unpaired UTF-16 surrogate in a \\u escape");
            pos_ += 2;
            const unsigned low = hex4();
            if (low < 0xDC00 || low > 0xDFFF)
              throw error("unpaired UTF-16 surrogate in a \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            throw error("unpaired UTF-16 surrogate in a \\u escape");
          }
          if (out) append_utf8(cp, *out);
          continue;
        }
        default:
          throw error(std::string("not valid JSON: bad escape \\") + e);
      }
      if (out) *out += plain;
    }
  }
  void skip_value(int depth) {
    if (depth > 512) throw error("JSON nested too deeply");
    skip_space();
    const char c = peek();
    if (c == '"') {
      read_string(nullptr);
    } else if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++pos_;
      skip_space();
      if (peek() == close) {
        ++pos_;
        return;
      }
      while (true) {
        skip_space();
        if (c == '{') {
          read_string(nullptr);
          skip_space();
          expect(':');
        }
        skip_value(depth + 1);
        skip_space();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        expect(close);
        return;
      }
    } else {
      // number, true, false, null
      const std::size_t start = pos_;
      while (pos_ < s_.size() && s_[pos_] != '\0' &&
             std::strchr("0123456789+-.eEtruefalsn", s_[pos_]))
        ++pos_;
      const std::string_view word = s_.substr(start, pos_ - start);
      const bool number =
          !word.empty() && (std::isdigit(static_cast<unsigned char>(word[0])) || word[0] == '-');
      if (!(number || word == "true" || word == "false" || word == "null"))
        throw error("not valid JSON: unexpected character");
    }
  }

  std::string_view s_;
  std::string where_;
  std::size_t pos_ = 0;
};

struct InputFile {
  std::string relative;  // path inside the domain directory (sorting key)
  std::uint64_t size = 0;
  FileKind kind = FileKind::Text;
};

// Calls `document(text)` for each non-empty document of the file, stopping after `limit`
// documents. With `need_utf8`, text that is not UTF-8 is an InputError naming the place.
void read_documents(const fs::path& path, FileKind kind, bool need_utf8, std::uint64_t limit,
                    const std::function<void(std::string_view)>& document) {
  if (limit == 0) return;
  const auto not_utf8 = [](const std::string& where, std::size_t offset) {
    return InputError(where + ": not valid UTF-8 at byte offset " + std::to_string(offset) +
                      ": the gpt2 tokenizer takes UTF-8 text (convert it, e.g. iconv -f latin1 "
                      "-t utf-8, or use --tokenizer byte)");
  };
  std::string data = read_file(path);
  if (kind == FileKind::Text) {
    if (data.empty()) return;
    if (need_utf8) {
      const std::size_t bad = first_invalid_utf8(data);
      if (bad != std::string::npos) throw not_utf8(path.string(), bad);
    }
    document(data);
    return;
  }
  if (kind == FileKind::GzipJsonLines) data = gunzip(data, path);
  std::uint64_t taken = 0;
  std::size_t line_start = 0;
  std::int64_t line_no = 0;
  while (line_start < data.size() && taken < limit) {
    std::size_t line_end = data.find('\n', line_start);
    if (line_end == std::string::npos) line_end = data.size();
    ++line_no;
    const std::string_view line(data.data() + line_start, line_end - line_start);
    const std::size_t offset = line_start;
    line_start = line_end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    const std::string where = path.string() + ":" + std::to_string(line_no);
    if (need_utf8) {
      const std::size_t bad = first_invalid_utf8(line);
      if (bad != std::string::npos)
        throw not_utf8(where + (kind == FileKind::GzipJsonLines ? " (decompressed)" : ""),
                       offset + bad);
    }
    const std::string text = JsonLine(line, where).text_field();
    if (text.empty()) continue;
    if (need_utf8) {
      const std::size_t bad = first_invalid_utf8(text);
      if (bad != std::string::npos)
        throw InputError(where + ": the \"text\" string is not valid UTF-8 at its byte " +
                         std::to_string(bad) + " (the gpt2 tokenizer takes UTF-8 text)");
    }
    ++taken;
    document(text);
  }
}

// ---------------------------------------------------------------------------------------------
// Agreement on errors between ranks
// ---------------------------------------------------------------------------------------------

struct Failure {
  enum Kind : int { None = 0, Input = 1, System = 2 } kind = None;
  std::string message;
};

template <typename Fn>
Failure capture(Fn&& fn) {
  try {
    fn();
  } catch (const InputError& e) {
    return {Failure::Input, e.what()};
  } catch (const std::exception& e) {
    return {Failure::System, e.what()};
  }
  return {};
}

// Collective: if any rank failed, every rank throws the failure of the lowest failing rank,
// so no rank is left waiting in a collective that the others never reach.
void agree(MpiComm& comm, const Failure& mine) {
  std::vector<int> kinds(static_cast<std::size_t>(comm.size()));
  const int my_kind = mine.kind;
  comm.allgather(&my_kind, kinds.data(), sizeof(int));
  const auto first = std::find_if(kinds.begin(), kinds.end(), [](int k) { return k != 0; });
  if (first == kinds.end()) return;
  const int root = static_cast<int>(first - kinds.begin());
  std::string message = comm.rank() == root ? mine.message : std::string();
  std::uint64_t length = message.size();
  comm.broadcast(&length, sizeof(length), root);
  message.resize(length);
  comm.broadcast(message.data(), length, root);
  if (*first == Failure::Input) throw InputError(message);
  throw SystemError(message);
}

template <typename Fn>
void on_root_then_agree(MpiComm& comm, Fn&& fn) {
  Failure failure;
  if (comm.rank() == 0) failure = capture(fn);
  agree(comm, failure);
}

// ---------------------------------------------------------------------------------------------
// Byte buffers passed between ranks
// ---------------------------------------------------------------------------------------------

class Writer {
 public:
  void u64(std::uint64_t v) { raw(&v, sizeof(v)); }
  void str(const std::string& s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
  void raw(const void* p, std::size_t n) {
    const auto* c = static_cast<const char*>(p);
    data.insert(data.end(), c, c + n);
  }
  std::vector<char> data;
};

class Reader {
 public:
  Reader(const char* p, std::size_t n) : p_(p), end_(p + n) {}
  std::uint64_t u64() {
    std::uint64_t v;
    raw(&v, sizeof(v));
    return v;
  }
  std::string str() {
    std::string s(u64(), '\0');
    raw(s.data(), s.size());
    return s;
  }
  void raw(void* out, std::size_t n) {
    if (static_cast<std::size_t>(end_ - p_) < n)
      throw SystemError("prepare: short message between ranks");
    std::memcpy(out, p_, n);
    p_ += n;
  }
  bool done() const { return p_ == end_; }

 private:
  const char* p_;
  const char* end_;
};

void broadcast_buffer(MpiComm& comm, std::vector<char>& data) {
  std::uint64_t n = data.size();
  comm.broadcast(&n, sizeof(n), 0);
  data.resize(n);
  comm.broadcast(data.data(), n, 0);
}

// Every rank's buffer on rank 0, in rank order (sent in chunks: MPI counts are int).
std::vector<std::vector<char>> gather_to_root(MpiComm& comm, const std::vector<char>& mine) {
  const std::uint64_t my_size = mine.size();
  std::vector<std::uint64_t> sizes(static_cast<std::size_t>(comm.size()));
  comm.allgather(&my_size, sizes.data(), sizeof(my_size));
  constexpr std::size_t kChunk = std::size_t{1} << 30;
  constexpr int kTag = 7301;
  std::vector<std::vector<char>> all;
  if (comm.rank() == 0) {
    all.resize(sizes.size());
    all[0] = mine;
    for (std::size_t r = 1; r < sizes.size(); ++r) {
      all[r].resize(sizes[r]);
      for (std::size_t off = 0; off < sizes[r]; off += kChunk) {
        const int n = static_cast<int>(std::min(kChunk, sizes[r] - off));
        BTM_MPI(MPI_Recv(all[r].data() + off, n, MPI_BYTE, static_cast<int>(r), kTag, comm.raw(),
                         MPI_STATUS_IGNORE));
      }
    }
  } else {
    for (std::size_t off = 0; off < mine.size(); off += kChunk) {
      const int n = static_cast<int>(std::min(kChunk, mine.size() - off));
      BTM_MPI(MPI_Send(mine.data() + off, n, MPI_BYTE, 0, kTag, comm.raw()));
    }
  }
  return all;
}

// ---------------------------------------------------------------------------------------------
// The plan: domains and their files (made by rank 0, broadcast)
// ---------------------------------------------------------------------------------------------

struct DomainPlan {
  std::string name;
  std::string source;  // contents of DOMAIN/SOURCE, if present
  std::vector<InputFile> files;
};

bool hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

DomainPlan list_domain(const fs::path& dir, const std::string& name) {
  DomainPlan plan;
  plan.name = name;
  std::int64_t ignored = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (hidden(it->path())) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file()) continue;
    FileKind kind;
    const std::string rel = fs::relative(it->path(), dir).generic_string();
    if (!usable_kind(rel, kind)) {
      if (rel != "SOURCE") ++ignored;
      continue;
    }
    plan.files.push_back({rel, static_cast<std::uint64_t>(it->file_size()), kind});
  }
  if (ec) throw InputError(dir.string() + ": cannot list the directory (" + ec.message() + ")");
  std::sort(plan.files.begin(), plan.files.end(),
            [](const InputFile& a, const InputFile& b) { return a.relative < b.relative; });
  if (plan.files.empty())
    throw InputError(
        dir.string() + ": domain '" + name + "' has no usable files (" + std::to_string(ignored) +
        " other files): put .txt files (one document each) or .jsonl / .jsonl.gz "
        "files (one {\"text\": ...} object per line) in it, or leave it out of --domains");
  if (fs::is_regular_file(dir / "SOURCE")) {
    plan.source = read_file(dir / "SOURCE");
    while (!plan.source.empty() && std::isspace(static_cast<unsigned char>(plan.source.back())))
      plan.source.pop_back();
  }
  return plan;
}

std::vector<DomainPlan> make_plan(const PrepareOptions& options) {
  if (!fs::is_directory(options.input))
    throw InputError("input directory '" + options.input.string() +
                     "' does not exist: pass --input DIR with one subdirectory of text files per "
                     "domain (tools/build_corpus.py makes one)");
  std::vector<std::string> available;
  for (const auto& entry : fs::directory_iterator(options.input))
    if (entry.is_directory() && !hidden(entry.path()))
      available.push_back(entry.path().filename().string());
  std::sort(available.begin(), available.end());
  std::vector<std::string> names = options.domains.empty() ? available : options.domains;
  if (names.empty())
    throw InputError("input directory '" + options.input.string() +
                     "' has no domain subdirectories: make one directory of text files per domain");
  std::vector<DomainPlan> plan;
  for (const std::string& name : names) {
    if (std::count(names.begin(), names.end(), name) > 1)
      throw InputError("--domains names '" + name + "' twice");
    if (!std::binary_search(available.begin(), available.end(), name)) {
      std::string list;
      for (const auto& a : available) list += (list.empty() ? "" : ", ") + a;
      throw InputError("domain '" + name + "': no directory " + (options.input / name).string() +
                       " (domains found there: " + (list.empty() ? "none" : list) + ")");
    }
    plan.push_back(list_domain(options.input / name, name));
  }
  std::error_code ec;
  fs::create_directories(options.out, ec);
  if (ec || !fs::is_directory(options.out))
    throw InputError("cannot create the output directory '" + options.out.string() + "' (" +
                     (ec ? ec.message() : std::string("a file is in the way")) +
                     "): pass --out a writable directory");
  return plan;
}

std::vector<char> serialize(const std::vector<DomainPlan>& plan) {
  Writer w;
  w.u64(plan.size());
  for (const auto& d : plan) {
    w.str(d.name);
    w.str(d.source);
    w.u64(d.files.size());
    for (const auto& f : d.files) {
      w.str(f.relative);
      w.u64(f.size);
      w.u64(static_cast<std::uint64_t>(f.kind));
    }
  }
  return w.data;
}

std::vector<DomainPlan> deserialize(const std::vector<char>& data) {
  Reader r(data.data(), data.size());
  std::vector<DomainPlan> plan(r.u64());
  for (auto& d : plan) {
    d.name = r.str();
    d.source = r.str();
    d.files.resize(r.u64());
    for (auto& f : d.files) {
      f.relative = r.str();
      f.size = r.u64();
      f.kind = static_cast<FileKind>(r.u64());
    }
  }
  return plan;
}

// How much of a domain the --max-mb cap keeps: the first `files` files, of which the last
// contributes at most `last_file_docs` documents.
struct Cutoff {
  std::size_t files = 0;
  std::uint64_t last_file_docs = std::numeric_limits<std::uint64_t>::max();
};

Cutoff find_cutoff(const DomainPlan& domain, const fs::path& dir, double max_mb, bool need_utf8) {
  Cutoff cut;
  cut.files = domain.files.size();
  if (max_mb <= 0) return cut;
  const double cap = max_mb * kMB;
  double total = 0;
  for (std::size_t i = 0; i < domain.files.size(); ++i) {
    const InputFile& f = domain.files[i];
    std::uint64_t docs = 0;
    if (f.kind == FileKind::Text) {
      // One document per file: its size is enough, no need to read it here.
      if (f.size > 0) total += static_cast<double>(f.size), docs = 1;
    } else {
      read_documents(dir / f.relative, f.kind, need_utf8, std::numeric_limits<std::uint64_t>::max(),
                     [&](std::string_view text) {
                       if (total >= cap) return;
                       total += static_cast<double>(text.size());
                       ++docs;
                     });
    }
    if (total >= cap) {
      cut.files = i + 1;
      cut.last_file_docs = docs;
      return cut;
    }
  }
  return cut;
}

// Deterministic assignment of files to ranks: largest first onto the least-loaded rank.
std::vector<int> assign_files(const std::vector<InputFile>& files, std::size_t count, int ranks) {
  std::vector<std::size_t> order(count);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return files[a].size > files[b].size; });
  std::vector<std::uint64_t> load(static_cast<std::size_t>(ranks), 0);
  std::vector<int> owner(count, 0);
  for (std::size_t i : order) {
    const auto least = std::min_element(load.begin(), load.end()) - load.begin();
    owner[i] = static_cast<int>(least);
    load[static_cast<std::size_t>(least)] += std::max<std::uint64_t>(files[i].size, 1);
  }
  return owner;
}

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ull;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}

std::string fixed(double v, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

// One document as gathered on rank 0.
struct Document {
  std::uint32_t file, index;  // position in the domain's order
  std::uint64_t bytes;
  std::vector<std::uint16_t> tokens;
};

PreparedDomain prepare_domain(const PrepareOptions& options, const DomainPlan& domain,
                              const Tokenizer& tokenizer, MpiComm& comm, std::ostream* log) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const bool root = comm.rank() == 0;
  const fs::path dir = options.input / domain.name;
  const bool need_utf8 = tokenizer.name() == "gpt2";
  const auto seconds_since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };

  // 1. The cap (rank 0 reads ahead as far as it needs), then who reads which file.
  Cutoff cut;
  on_root_then_agree(comm, [&] { cut = find_cutoff(domain, dir, options.max_mb, need_utf8); });
  comm.broadcast(&cut, sizeof(cut), 0);
  const std::vector<int> owner = assign_files(domain.files, cut.files, comm.size());
  if (root && log) {
    std::uint64_t disk = 0;
    for (std::size_t i = 0; i < cut.files; ++i) disk += domain.files[i].size;
    *log << "prepare: " << domain.name << ": " << cut.files << " of " << domain.files.size()
         << " files (" << fixed(static_cast<double>(disk) / kMB, 1) << " MB on disk)"
         << (options.max_mb > 0 ? " under the " + fixed(options.max_mb, 1) + " MB cap" : "") << ", "
         << comm.size() << " rank" << (comm.size() > 1 ? "s" : "") << "\n"
         << std::flush;
  }

  // 2. Each rank tokenizes its files.
  Writer mine;
  std::uint64_t my_bytes = 0, my_share = 0;
  for (std::size_t i = 0; i < cut.files; ++i)
    if (owner[i] == comm.rank()) my_share += domain.files[i].size;
  const auto work_start = Clock::now();
  auto last_report = work_start;
  const auto report = [&] {
    last_report = Clock::now();
    const double t = seconds_since(work_start);
    *log << "prepare: " << domain.name << ": rank 0 has tokenized "
         << fixed(static_cast<double>(my_bytes) / kMB, 1) << " MB (~"
         << fixed(100.0 * static_cast<double>(my_bytes) /
                      static_cast<double>(std::max<std::uint64_t>(my_share, 1)),
                  0)
         << "% of its share) at " << fixed(static_cast<double>(my_bytes) / kMB / t, 2) << " MB/s\n"
         << std::flush;
  };
  const Failure failure = capture([&] {
    std::vector<std::uint16_t> tokens;
    for (std::size_t i = 0; i < cut.files; ++i) {
      if (owner[i] != comm.rank()) continue;
      const std::uint64_t limit =
          i + 1 == cut.files ? cut.last_file_docs : std::numeric_limits<std::uint64_t>::max();
      std::uint32_t index = 0;
      read_documents(dir / domain.files[i].relative, domain.files[i].kind, need_utf8, limit,
                     [&](std::string_view text) {
                       tokens.clear();
                       tokenizer.encode(text, tokens);
                       tokens.push_back(static_cast<std::uint16_t>(tokenizer.eot_token()));
                       mine.u64(i);
                       mine.u64(index++);
                       mine.u64(text.size());
                       mine.u64(tokens.size());
                       mine.raw(tokens.data(), tokens.size() * sizeof(std::uint16_t));
                       my_bytes += text.size();
                       if (root && log && seconds_since(last_report) > 10) report();
                     });
    }
  });
  const double my_seconds = seconds_since(work_start);
  agree(comm, failure);

  // Throughput of every rank that had work.
  const double my_stats[2] = {static_cast<double>(my_bytes), my_seconds};
  std::vector<double> stats(2 * static_cast<std::size_t>(comm.size()));
  comm.allgather(my_stats, stats.data(), sizeof(my_stats));

  // 3. Rank 0 puts the documents in order, splits them and writes the domain.
  const auto gathered = gather_to_root(comm, mine.data);
  mine.data = {};
  PreparedDomain result;
  result.domain = domain.name;
  result.file = corpus_path(options.out, domain.name);
  on_root_then_agree(comm, [&] {
    std::vector<Document> docs;
    for (const auto& buffer : gathered) {
      Reader r(buffer.data(), buffer.size());
      while (!r.done()) {
        Document d;
        d.file = static_cast<std::uint32_t>(r.u64());
        d.index = static_cast<std::uint32_t>(r.u64());
        d.bytes = r.u64();
        d.tokens.resize(r.u64());
        r.raw(d.tokens.data(), d.tokens.size() * sizeof(std::uint16_t));
        docs.push_back(std::move(d));
      }
    }
    std::sort(docs.begin(), docs.end(), [](const Document& a, const Document& b) {
      return a.file != b.file ? a.file < b.file : a.index < b.index;
    });
    const std::size_t n = docs.size();
    if (n == 0)
      throw InputError(dir.string() + ": domain '" + domain.name + "' has no documents (its " +
                       std::to_string(cut.files) +
                       " files are empty): add text or leave it out of --domains");
    const auto share = [n](double fraction) -> std::size_t {
      return fraction > 0
                 ? std::max<std::size_t>(
                       1, static_cast<std::size_t>(std::llround(fraction * static_cast<double>(n))))
                 : 0;
    };
    const std::size_t n_valid = share(options.valid_fraction),
                      n_test = share(options.test_fraction);
    if (n_valid + n_test >= n)
      throw InputError(
          dir.string() + ": domain '" + domain.name + "' has only " + std::to_string(n) +
          " document" + (n == 1 ? "" : "s") + ", too few for a train split beside " +
          std::to_string(n_valid) + " valid and " + std::to_string(n_test) +
          " test documents: add documents or lower --valid-fraction / --test-fraction");
    // A seeded permutation picks the valid and test documents; each split keeps the order.
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    Rng rng(mix64(options.seed ^ fnv1a(domain.name)));
    for (std::size_t i = n - 1; i > 0; --i)
      std::swap(order[i], order[static_cast<std::size_t>(rng.next_u64() % (i + 1))]);
    std::vector<std::uint8_t> split_of(n, static_cast<std::uint8_t>(Split::Train));
    for (std::size_t k = 0; k < n_valid + n_test; ++k)
      split_of[order[k]] = static_cast<std::uint8_t>(k < n_valid ? Split::Valid : Split::Test);

    std::vector<std::uint16_t> splits[3];
    CorpusInfo info;
    info.domain = domain.name;
    info.tokenizer = tokenizer.name();
    info.vocab_size = tokenizer.vocab_size();
    info.eot_token = tokenizer.eot_token();
    std::int64_t files_used = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const int s = split_of[i];
      splits[s].insert(splits[s].end(), docs[i].tokens.begin(), docs[i].tokens.end());
      ++info.docs[s];
      info.bytes[s] += static_cast<std::int64_t>(docs[i].bytes);
      if (i == 0 || docs[i].file != docs[i - 1].file) ++files_used;
    }
    std::ostringstream source;
    if (!domain.source.empty()) source << domain.source << "\n";
    source << "btm prepare: " << dir.string() << ", " << files_used << " files, " << n
           << " documents";
    if (options.max_mb > 0) source << " (capped at " << fixed(options.max_mb, 1) << " MB)";
    source << ", seed " << options.seed;
    info.source = source.str();
    write_corpus(result.file, info, splits);
    result.files = files_used;
    for (int s = 0; s < 3; ++s) {
      result.docs[s] = info.docs[s];
      result.bytes[s] = info.bytes[s];
      result.tokens[s] = static_cast<std::int64_t>(splits[s].size());
    }
  });
  // Every rank returns the same summary.
  comm.broadcast(&result.files, sizeof(result.files), 0);
  comm.broadcast(result.docs, sizeof(result.docs), 0);
  comm.broadcast(result.bytes, sizeof(result.bytes), 0);
  comm.broadcast(result.tokens, sizeof(result.tokens), 0);
  result.seconds = seconds_since(start);
  comm.broadcast(&result.seconds, sizeof(result.seconds), 0);
  double min_rate = std::numeric_limits<double>::max(), sum_rate = 0;
  int working = 0;
  for (int r = 0; r < comm.size(); ++r) {
    const double bytes = stats[2 * static_cast<std::size_t>(r)];
    const double secs = stats[2 * static_cast<std::size_t>(r) + 1];
    if (bytes <= 0 || secs <= 0) continue;
    const double rate = bytes / kMB / secs;
    min_rate = std::min(min_rate, rate);
    sum_rate += rate;
    ++working;
  }
  result.rank_mb_per_s_min = working ? min_rate : 0;
  result.rank_mb_per_s_mean = working ? sum_rate / working : 0;

  if (root && log) {
    const std::int64_t bytes = result.bytes[0] + result.bytes[1] + result.bytes[2];
    const std::int64_t tokens = result.tokens[0] + result.tokens[1] + result.tokens[2];
    *log << "prepare: " << domain.name << ": " << result.docs[0] << "/" << result.docs[1] << "/"
         << result.docs[2] << " documents (train/valid/test), "
         << fixed(static_cast<double>(bytes) / kMB, 2) << " MB, " << tokens << " tokens ("
         << result.tokens[0] << "/" << result.tokens[1] << "/" << result.tokens[2] << "), "
         << fixed(
                static_cast<double>(bytes) / static_cast<double>(std::max<std::int64_t>(tokens, 1)),
                2)
         << " bytes/token; " << fixed(result.seconds, 1) << " s, tokenizing at "
         << fixed(result.rank_mb_per_s_mean, 2) << " MB/s per rank (slowest "
         << fixed(result.rank_mb_per_s_min, 2) << "), "
         << fixed(static_cast<double>(bytes) / kMB / std::max(result.seconds, 1e-9), 2)
         << " MB/s in all -> " << result.file.string() << "\n"
         << std::flush;
  }
  return result;
}

void check_options(const PrepareOptions& o) {
  const auto fraction_ok = [](double f) { return f >= 0 && f < 1 && std::isfinite(f); };
  if (!fraction_ok(o.valid_fraction) || !fraction_ok(o.test_fraction) ||
      o.valid_fraction + o.test_fraction >= 1)
    throw InputError(
        "--valid-fraction and --test-fraction must be in [0, 1) and sum to less than 1");
  if (!(o.max_mb >= 0) || !std::isfinite(o.max_mb))
    throw InputError("--max-mb must be >= 0 (0: no cap)");
  if (o.out.empty()) throw InputError("--out: name the corpus directory to write");
}

}  // namespace

std::vector<PreparedDomain> prepare_corpus(const PrepareOptions& options, MpiComm& comm,
                                           std::ostream* log) {
  check_options(options);
  std::unique_ptr<Tokenizer> tokenizer;
  // Every rank loads the tokenizer; a missing file is reported once, the same everywhere.
  agree(comm, capture([&] { tokenizer = make_tokenizer(options.tokenizer, options.bpe_dir); }));

  // Rank 0 lists the domains and files (so every rank works from one listing); mistakes in
  // the input tree are caught here, before anything is tokenized or written.
  std::vector<char> plan_bytes;
  on_root_then_agree(comm, [&] { plan_bytes = serialize(make_plan(options)); });
  broadcast_buffer(comm, plan_bytes);
  const std::vector<DomainPlan> plan = deserialize(plan_bytes);
  if (comm.rank() == 0 && log)
    *log << "prepare: " << plan.size() << " domain" << (plan.size() == 1 ? "" : "s") << " from "
         << options.input.string() << " -> " << options.out.string() << ", tokenizer "
         << tokenizer->name() << " (" << tokenizer->vocab_size() << " ids), " << comm.size()
         << " rank" << (comm.size() == 1 ? "" : "s") << "\n"
         << std::flush;

  std::vector<PreparedDomain> results;
  for (const DomainPlan& domain : plan)
    results.push_back(prepare_domain(options, domain, *tokenizer, comm, log));
  return results;
}

}  // namespace btm

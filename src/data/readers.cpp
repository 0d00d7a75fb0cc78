// Document readers: byte sources (plain files through stdio, gzip through zlib's gzread), a
// line reader over them, and the "text" field of a JSON line through nlohmann::json's SAX
// parser.
#include "btm/data/readers.hpp"

#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "btm/data/utf8.hpp"
#include "btm/util/error.hpp"
#include "json_error.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {

constexpr std::size_t kBufferBytes = std::size_t{1} << 20;

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// ---------------------------------------------------------------------------------------------
// Byte sources
// ---------------------------------------------------------------------------------------------

class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Up to `n` bytes into `out`; 0 at the end. InputError naming the file on a read error.
  virtual std::size_t read(char* out, std::size_t n) = 0;
};

class PlainFile final : public ByteSource {
 public:
  explicit PlainFile(const fs::path& file) : file_(file), f_(std::fopen(file.c_str(), "rb")) {
    if (!f_) throw InputError(file.string() + ": cannot open for reading");
  }
  ~PlainFile() override { std::fclose(f_); }
  PlainFile(const PlainFile&) = delete;
  PlainFile& operator=(const PlainFile&) = delete;

  std::size_t read(char* out, std::size_t n) override {
    const std::size_t got = std::fread(out, 1, n, f_);
    if (got == 0 && std::ferror(f_)) throw InputError(file_.string() + ": read failed");
    return got;
  }

 private:
  fs::path file_;
  std::FILE* f_;
};

// A gzip file through gzread, which reads several members one after another (and, as gzip -d,
// ignores what follows the last member if it is not gzip data). A file that is not gzip at all
// (which gzread would pass through as it is), a damaged stream and one that ends inside a member
// are InputErrors.
class GzipFile final : public ByteSource {
 public:
  explicit GzipFile(const fs::path& file) : file_(file), f_(gzopen(file.c_str(), "rb")) {
    if (!f_) throw InputError(file.string() + ": cannot open for reading");
    gzbuffer(f_, 1u << 17);
  }
  ~GzipFile() override { gzclose(f_); }
  GzipFile(const GzipFile&) = delete;
  GzipFile& operator=(const GzipFile&) = delete;

  std::size_t read(char* out, std::size_t n) override {
    const int got = gzread(f_, out, static_cast<unsigned>(std::min<std::size_t>(n, INT_MAX)));
    if (!checked_header_) {
      checked_header_ = true;
      if (gzdirect(f_))
        throw damaged(total_ == 0 && got <= 0 ? "empty file, not gzip data"
                                              : "corrupt gzip data (incorrect header check)");
    }
    if (got <= 0) {
      int code = Z_OK;
      const char* message = gzerror(f_, &code);
      if (code == Z_BUF_ERROR)
        throw damaged("truncated gzip data (the stream ends before its end marker, after " +
                      std::to_string(total_) + " bytes)");
      if (code == Z_MEM_ERROR) throw SystemError("zlib: out of memory reading " + file_.string());
      if (got < 0 || code != Z_OK) {
        // gzerror's message is "PATH: what"; the path is said once, in front.
        std::string what = message ? message : "zlib error";
        const std::string prefix = file_.string() + ": ";
        if (what.compare(0, prefix.size(), prefix) == 0) what.erase(0, prefix.size());
        if (code == Z_ERRNO) throw InputError(file_.string() + ": read failed (" + what + ")");
        throw damaged("corrupt gzip data (" + what + ")");
      }
      return 0;
    }
    total_ += static_cast<std::uint64_t>(got);
    return static_cast<std::size_t>(got);
  }

 private:
  InputError damaged(const std::string& what) const {
    return InputError(file_.string() + ": " + what +
                      ": the gzip file is damaged; re-create or re-download it");
  }

  fs::path file_;
  gzFile f_;
  bool checked_header_ = false;
  std::uint64_t total_ = 0;  // decompressed bytes so far
};

// Lines ('\n'-separated; the last one may lack its '\n') of a byte source, a buffer at a time.
class LineReader {
 public:
  explicit LineReader(ByteSource& source) : source_(source), buffer_(kBufferBytes) {}

  // The next line, without its '\n', into `line`; false at the end.
  bool next(std::string& line) {
    line.clear();
    line_offset_ = offset_;
    while (true) {
      if (pos_ == end_) {
        if (at_end_) return !line.empty();
        end_ = source_.read(buffer_.data(), buffer_.size());
        pos_ = 0;
        if (end_ == 0) {
          at_end_ = true;
          return !line.empty();
        }
      }
      const char* start = buffer_.data() + pos_;
      const std::size_t available = end_ - pos_;
      const void* newline = std::memchr(start, '\n', available);
      const std::size_t length =
          newline ? static_cast<std::size_t>(static_cast<const char*>(newline) - start) : available;
      line.append(start, length);
      const std::size_t used = newline ? length + 1 : length;
      pos_ += used;
      offset_ += used;
      if (newline) return true;
    }
  }
  // Byte offset in the stream of the line `next` returned last.
  std::uint64_t line_offset() const { return line_offset_; }

 private:
  ByteSource& source_;
  std::vector<char> buffer_;
  std::size_t pos_ = 0, end_ = 0;
  bool at_end_ = false;
  std::uint64_t offset_ = 0, line_offset_ = 0;
};

// ---------------------------------------------------------------------------------------------
// The text field of a JSON line
// ---------------------------------------------------------------------------------------------

// SAX events of nlohmann::json: takes the first `key` member of the top-level object and stops
// at the first value that makes the line unusable (the others are checked and dropped).
class TextField {
 public:
  using json = nlohmann::json;
  enum class Problem { None, NotAnObject, NotAString, Syntax };

  explicit TextField(const std::string& key) : key_(key) {}

  bool null() { return scalar(nullptr); }
  bool boolean(bool) { return scalar(nullptr); }
  bool number_integer(json::number_integer_t) { return scalar(nullptr); }
  bool number_unsigned(json::number_unsigned_t) { return scalar(nullptr); }
  bool number_float(json::number_float_t, const json::string_t&) { return scalar(nullptr); }
  bool string(json::string_t& s) { return scalar(&s); }
  bool binary(json::binary_t&) { return scalar(nullptr); }
  bool start_object(std::size_t) {
    if (depth_ > 0 && !container()) return false;
    ++depth_;
    return true;
  }
  bool start_array(std::size_t) {
    if (depth_ == 0) return fail(Problem::NotAnObject);
    if (!container()) return false;
    ++depth_;
    return true;
  }
  bool key(json::string_t& k) {
    taking_ = depth_ == 1 && !found && k == key_;
    // The first few members, to name in the error when the key is missing.
    if (depth_ == 1 && members.size() < 8) members.push_back(k);
    if (depth_ == 1) ++member_count;
    return true;
  }
  bool end_object() {
    --depth_;
    return true;
  }
  bool end_array() {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) {
    column = position;
    detail = json_parse_error_detail(e.what());
    return fail(Problem::Syntax);
  }

  Problem problem = Problem::None;
  bool found = false;
  std::string text;
  std::size_t column = 0;            // of a syntax error
  std::string detail;                // of a syntax error
  std::vector<std::string> members;  // top-level member names (the first 8)
  std::size_t member_count = 0;

 private:
  bool fail(Problem p) {
    problem = p;
    return false;
  }
  // A container as a member value: not what "text" may be.
  bool container() {
    if (!taking_) return true;
    return fail(Problem::NotAString);
  }
  bool scalar(json::string_t* s) {
    if (depth_ == 0) return fail(Problem::NotAnObject);
    if (!taking_) return true;
    taking_ = false;
    if (!s) return fail(Problem::NotAString);
    text = std::move(*s);
    found = true;
    return true;
  }

  const std::string& key_;
  int depth_ = 0;
  bool taking_ = false;  // the next value is the first `key_` member of the top-level object
};

constexpr const char* kTextUtf8Advice =
    "the gpt2 tokenizer takes UTF-8 text (convert it, e.g. iconv -f latin1 -t utf-8, or use "
    "--tokenizer byte)";

InputError not_utf8(const std::string& where, std::uint64_t offset, const std::string& advice) {
  return InputError(where + ": not valid UTF-8 at byte offset " + std::to_string(offset) + ": " +
                    advice);
}

}  // namespace

std::optional<FileKind> document_file_kind(std::string_view name) {
  if (ends_with(name, ".txt")) return FileKind::Text;
  if (ends_with(name, ".jsonl")) return FileKind::JsonLines;
  if (ends_with(name, ".jsonl.gz")) return FileKind::GzipJsonLines;
  return std::nullopt;
}

std::string read_whole_file(const fs::path& file) {
  PlainFile in(file);
  std::string data;
  std::error_code ec;
  const std::uintmax_t size = fs::file_size(file, ec);
  if (!ec) data.reserve(static_cast<std::size_t>(size));
  std::vector<char> buffer(kBufferBytes);
  while (const std::size_t got = in.read(buffer.data(), buffer.size()))
    data.append(buffer.data(), got);
  return data;
}

std::string ReaderOptions::txt_documents() const {
  if (split_lines > 0) return "lines:" + std::to_string(split_lines);
  return split_blank_lines ? "blank-lines" : "file";
}

void check_reader_options(const ReaderOptions& o) {
  if (o.text_key.empty())
    throw InputError("--text-key is empty: name the JSON member that holds each line's text");
  if (o.split_lines < 0)
    throw InputError("--split-lines " + std::to_string(o.split_lines) +
                     ": give the number of lines per document (>= 1)");
  if (o.split_lines > 0 && o.split_blank_lines)
    throw InputError(
        "--split-lines and --split-blank-lines both cut .txt files into documents: give one");
}

std::string json_line_text(std::string_view line, const std::string& where,
                           const std::string& key) {
  const std::string expected = "every line must be a JSON object with a \"" + key + "\" string";
  TextField field(key);
  try {
    nlohmann::json::sax_parse(line.begin(), line.end(), &field);
  } catch (const nlohmann::json::exception& e) {
    throw InputError(where + ": not valid JSON: " + json_parse_error_detail(e.what()));
  }
  switch (field.problem) {
    case TextField::Problem::Syntax:
      throw InputError(where + ": not valid JSON: " + field.detail + " (at column " +
                       std::to_string(field.column) + ")");
    case TextField::Problem::NotAnObject:
      throw InputError(where + ": not a JSON object (" + expected + ")");
    case TextField::Problem::NotAString:
      throw InputError(where + ": the \"" + key + "\" field is not a string (" + expected + ")");
    case TextField::Problem::None:
      break;
  }
  if (!field.found) {
    std::string members;
    for (const std::string& m : field.members) members += (members.empty() ? "" : ", ") + m;
    if (field.member_count > field.members.size()) members += ", ...";
    throw InputError(where + ": no \"" + key + "\" field (" + expected + "; this one has " +
                     (members.empty() ? "no members" : "the members " + members) +
                     ": name the text member with --text-key)");
  }
  return std::move(field.text);
}

namespace {

bool blank(std::string_view line) {
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

// A .txt file cut into documents of `options.split_lines` lines or at blank lines, streamed.
// A document keeps its lines' text and newlines; a piece of blank lines only is no document.
void read_text_pieces(const fs::path& file, bool need_utf8, std::uint64_t limit,
                      const ReaderOptions& options,
                      const std::function<void(std::string_view)>& document) {
  PlainFile source(file);
  LineReader lines(source);
  std::string line, text;
  std::int64_t in_piece = 0;
  bool has_text = false;
  std::uint64_t taken = 0;
  const auto flush = [&] {
    if (has_text) {
      ++taken;
      document(text);
    }
    text.clear();
    in_piece = 0;
    has_text = false;
  };
  while (taken < limit && lines.next(line)) {
    if (need_utf8) {
      const std::size_t bad = first_invalid_utf8(line);
      if (bad != std::string::npos)
        throw not_utf8(file.string(), lines.line_offset() + bad, kTextUtf8Advice);
    }
    const bool is_blank = blank(line);
    if (options.split_blank_lines && is_blank) {
      flush();
      continue;
    }
    text += line;
    text += '\n';
    has_text = has_text || !is_blank;
    if (options.split_lines > 0 && ++in_piece == options.split_lines) flush();
  }
  if (taken < limit) flush();
}

}  // namespace

void read_documents(const fs::path& file, FileKind kind, bool need_utf8, std::uint64_t limit,
                    const ReaderOptions& options,
                    const std::function<void(std::string_view)>& document) {
  if (limit == 0) return;
  if (kind == FileKind::Text && options.splits_text())
    return read_text_pieces(file, need_utf8, limit, options, document);
  if (kind == FileKind::Text) {
    const std::string data = read_whole_file(file);
    if (data.empty()) return;
    if (need_utf8) {
      const std::size_t bad = first_invalid_utf8(data);
      if (bad != std::string::npos) throw not_utf8(file.string(), bad, kTextUtf8Advice);
    }
    document(data);
    return;
  }
  const bool gzip = kind == FileKind::GzipJsonLines;
  std::unique_ptr<ByteSource> source;
  if (gzip)
    source = std::make_unique<GzipFile>(file);
  else
    source = std::make_unique<PlainFile>(file);
  LineReader lines(*source);
  std::string line;
  std::uint64_t taken = 0;
  std::int64_t line_no = 0;
  while (taken < limit && lines.next(line)) {
    ++line_no;
    if (blank(line)) continue;
    const std::string where = file.string() + ":" + std::to_string(line_no);
    // JSON text is UTF-8 (RFC 8259), whatever the tokenizer.
    const std::size_t bad = first_invalid_utf8(line);
    if (bad != std::string::npos)
      throw not_utf8(where + (gzip ? " (decompressed)" : ""), lines.line_offset() + bad,
                     "JSON lines must be UTF-8 text (convert it, e.g. iconv -f latin1 -t utf-8)");
    const std::string text = json_line_text(line, where, options.text_key);
    if (text.empty()) continue;
    ++taken;
    document(text);
  }
}

}  // namespace btm

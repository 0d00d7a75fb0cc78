// readers.hpp: documents out of the input files of `btm prepare`. A .txt file is one document,
// or, with ReaderOptions::split_lines / split_blank_lines, one document per N lines or per
// paragraph; a .jsonl file holds one JSON object with a "text" string (or the member named by
// ReaderOptions::text_key) per line, each a document; a .jsonl.gz file is the same compressed with
// gzip (several members one after another are read as one stream, as by gzip -d). Files are
// streamed: a .jsonl or .jsonl.gz file, or a .txt file cut into documents, is read a buffer at a
// time, so only the current document is in memory, whatever the file's size.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace btm {

enum class FileKind { Text, JsonLines, GzipJsonLines };

// The kind of a document file by its name (.txt, .jsonl, .jsonl.gz); nullopt for other files.
std::optional<FileKind> document_file_kind(std::string_view name);

// How documents are cut out of files (btm prepare --text-key, --split-lines,
// --split-blank-lines).
struct ReaderOptions {
  std::string text_key = "text";   // the member of a JSON line that holds its text
  std::int64_t split_lines = 0;    // > 0: a .txt file is a document every this many lines
  bool split_blank_lines = false;  // a .txt file is a document per run of non-blank lines

  bool splits_text() const { return split_lines > 0 || split_blank_lines; }
  // What a .txt file is, as recorded in a corpus: "file", "lines:N" or "blank-lines".
  std::string txt_documents() const;
};

// InputError naming the option if `options` cannot be used (an empty key, N < 0 given, both
// ways of cutting at once).
void check_reader_options(const ReaderOptions& options);

// The whole file; InputError naming it if it cannot be read.
std::string read_whole_file(const std::filesystem::path& file);

// Calls `document(text)` for each non-empty document of the file, in order, and stops after
// `limit` documents. Blank lines, documents whose text is empty and (cutting a .txt file) pieces
// of blank lines only are skipped. InputError naming the file (and line) on a file that cannot be
// read, a damaged gzip stream, a line that is not UTF-8 or not a JSON object with a string under
// the text key, and, with `need_utf8`, a .txt file that is not UTF-8.
void read_documents(const std::filesystem::path& file, FileKind kind, bool need_utf8,
                    std::uint64_t limit, const ReaderOptions& options,
                    const std::function<void(std::string_view)>& document);

// The `key` string of one line of a .jsonl file (the first such member of the top-level
// object); InputError starting with `where` if the line is not a JSON object with a string
// there (naming the object's members when `key` is missing).
std::string json_line_text(std::string_view line, const std::string& where,
                           const std::string& key = "text");

}  // namespace btm

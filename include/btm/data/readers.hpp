// readers.hpp: documents out of the input files of `btm prepare`. A .txt file is one document;
// a .jsonl file holds one JSON object with a "text" string per line, each a document; a
// .jsonl.gz file is the same compressed with gzip (several members one after another are read
// as one stream, as by gzip -d). Files are streamed: a .jsonl or .jsonl.gz file is read a buffer
// at a time, so only the current line (one document) is in memory, whatever the file's size.
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

// The whole file; InputError naming it if it cannot be read.
std::string read_whole_file(const std::filesystem::path& file);

// Calls `document(text)` for each non-empty document of the file, in order, and stops after
// `limit` documents. Blank lines and documents whose "text" is empty are skipped. InputError
// naming the file (and line) on a file that cannot be read, a damaged gzip stream, a line that
// is not UTF-8 or not a JSON object with a "text" string, and, with `need_utf8`, a .txt file that
// is not UTF-8.
void read_documents(const std::filesystem::path& file, FileKind kind, bool need_utf8,
                    std::uint64_t limit, const std::function<void(std::string_view)>& document);

// The "text" string of one line of a .jsonl file (the first "text" member of the top-level
// object); InputError starting with `where` if the line is not a JSON object with a "text"
// string.
std::string json_line_text(std::string_view line, const std::string& where);

}  // namespace btm

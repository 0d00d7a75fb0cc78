// corpus.hpp: the tokenized corpus on disk. One HDF5 file per domain, CORPUS/DOMAIN.h5:
//   datasets  /train /valid /test   uint16 token ids, contiguous; documents end with the
//                                   end-of-text token
//   attributes format = "btm-corpus", format_version, domain, tokenizer ("byte" | "gpt2"),
//              vocab_size, eot_token, docs_{train,valid,test}, bytes_{train,valid,test},
//              source (free text: where the text came from), crc32_{train,valid,test} (zlib's
//              CRC-32 of each split's bytes, verified when the corpus is loaded; format 2),
//              vocab_hash (Tokenizer::vocab_hash; absent in corpora of older btm versions)
//              text_key (the JSON member read from .jsonl lines) and txt_documents (what a .txt
//              file was: "file", "lines:N" or "blank-lines"; both absent in older corpora)
// Token arrays are memory-mapped straight out of the file when they are contiguous, so every
// rank of a node shares one copy in the page cache.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace btm {

constexpr int kCorpusFormatVersion = 2;  // 1 is read too (no CRC-32 of the splits)

// A read-only view of a token array (memory-mapped or owned).
class TokenArray {
 public:
  TokenArray() = default;
  static TokenArray owned(std::vector<std::uint16_t> tokens);
  static TokenArray mapped(const std::filesystem::path& file, std::size_t byte_offset,
                           std::size_t count);
  const std::uint16_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::uint16_t operator[](std::size_t i) const { return data_[i]; }

 private:
  std::shared_ptr<void> storage_;
  const std::uint16_t* data_ = nullptr;
  std::size_t size_ = 0;
};

struct CorpusInfo {
  std::string domain;
  std::string tokenizer;
  std::string vocab_hash;  // Tokenizer::vocab_hash; empty: not recorded (an older corpus)
  int vocab_size = 0;
  int eot_token = 0;
  std::string source;
  std::string text_key;       // empty where the corpus does not record it
  std::string txt_documents;  // ReaderOptions::txt_documents(); empty where not recorded
  std::int64_t docs[3] = {0, 0, 0};
  std::int64_t bytes[3] = {0, 0, 0};
  std::int64_t tokens[3] = {0, 0, 0};
  int version = kCorpusFormatVersion;
  std::uint32_t crc32[3] = {0, 0, 0};  // of each split's bytes (format 2), checked on load
};

enum class Split { Train = 0, Valid = 1, Test = 2 };
const char* split_name(Split split);

struct DomainCorpus {
  CorpusInfo info;
  TokenArray splits[3];
  const TokenArray& split(Split s) const { return splits[static_cast<int>(s)]; }
};

std::filesystem::path corpus_path(const std::filesystem::path& corpus_dir,
                                  const std::string& domain);
// Reads attributes only; InputError naming the file if it is not a btm corpus.
CorpusInfo read_corpus_info(const std::filesystem::path& file);
// Opens a domain; checks format, version and that every token is < model_vocab (when > 0).
DomainCorpus load_corpus(const std::filesystem::path& file, int model_vocab);

// Writes one domain atomically.
void write_corpus(const std::filesystem::path& file, const CorpusInfo& info,
                  const std::vector<std::uint16_t> (&splits)[3]);

// Splits a token array into documents (each ends with eot, the last may not).
std::vector<std::pair<std::size_t, std::size_t>> document_spans(const TokenArray& tokens, int eot);

}  // namespace btm

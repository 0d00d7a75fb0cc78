// tokenizer.hpp: text <-> token ids. "byte": 256 byte ids plus end-of-text (id 256), needs no
// files. "gpt2": GPT-2's byte-level BPE (50,257 ids, end-of-text 50256) from encoder.json and
// vocab.bpe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace btm {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string name() const = 0;
  virtual int vocab_size() const = 0;
  virtual int eot_token() const = 0;
  // Appends the ids of `text` (no end-of-text is added).
  virtual void encode(std::string_view text, std::vector<std::uint16_t>& out) const = 0;
  virtual std::string decode(std::span<const std::uint16_t> ids) const = 0;
  // "fnv1a64:" and 16 hex digits: FNV-1a over every id's bytes (each a 4-byte little-endian
  // length, then the bytes), then every merge in rank order (left id, right id, 2 bytes each,
  // little-endian). Corpora and checkpoints record it: two vocabularies of one name that differ
  // (another encoder.json) have different hashes.
  virtual std::string vocab_hash() const = 0;
};

// name: "byte" or "gpt2". For gpt2, bpe_dir holds encoder.json and vocab.bpe (empty: the
// default search path; InputError naming what is missing and how to get it).
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name,
                                          const std::filesystem::path& bpe_dir = {});
// A fingerprint of the id -> text table (FNV-1a over the decoded ids in order): two tokenizers
// with the same name and size but other ids differ here (clusters.h5 records it).
std::uint64_t vocabulary_hash(const Tokenizer& tokenizer);

// The directory holding GPT-2's encoder.json and vocab.bpe: bpe_dir, or the default search path
// when empty ($BTM_GPT2_DIR, then data/gpt2 of the source tree); InputError as above.
std::filesystem::path gpt2_bpe_dir(const std::filesystem::path& bpe_dir = {});

}  // namespace btm

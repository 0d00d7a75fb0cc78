#include "btm/data/corpus.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include <algorithm>

#include "btm/io/h5.hpp"
#include "btm/util/error.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {
constexpr const char* kSplitNames[3] = {"train", "valid", "test"};

// zlib's CRC-32 of the tokens' bytes as stored (little-endian uint16).
std::uint32_t token_crc32(const std::uint16_t* tokens, std::size_t n) {
  return static_cast<std::uint32_t>(
      crc32_z(0, reinterpret_cast<const Bytef*>(tokens), n * sizeof(std::uint16_t)));
}
}  // namespace

const char* split_name(Split split) {
  return kSplitNames[static_cast<int>(split)];
}

TokenArray TokenArray::owned(std::vector<std::uint16_t> tokens) {
  TokenArray a;
  auto storage = std::make_shared<std::vector<std::uint16_t>>(std::move(tokens));
  a.data_ = storage->data();
  a.size_ = storage->size();
  a.storage_ = storage;
  return a;
}

TokenArray TokenArray::mapped(const fs::path& file, std::size_t byte_offset, std::size_t count) {
  TokenArray a;
  if (count == 0) return a;
  const int fd = ::open(file.c_str(), O_RDONLY);
  if (fd < 0) throw InputError(file.string() + ": cannot open for reading");
  const long page = ::sysconf(_SC_PAGESIZE);
  const std::size_t aligned =
      byte_offset / static_cast<std::size_t>(page) * static_cast<std::size_t>(page);
  const std::size_t length = byte_offset - aligned + count * sizeof(std::uint16_t);
  void* base = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(aligned));
  ::close(fd);
  if (base == MAP_FAILED) throw SystemError("mmap failed on " + file.string());
  a.storage_ = std::shared_ptr<void>(base, [length](void* p) { ::munmap(p, length); });
  a.data_ = reinterpret_cast<const std::uint16_t*>(static_cast<const char*>(base) +
                                                   (byte_offset - aligned));
  a.size_ = count;
  return a;
}

fs::path corpus_path(const fs::path& corpus_dir, const std::string& domain) {
  return corpus_dir / (domain + ".h5");
}

namespace {

CorpusInfo read_info(hid_t root, const fs::path& file) {
  try {
    if (!h5::has_attr(root, "format") || h5::get_string(root, "format") != "btm-corpus")
      throw InputError("not a btm corpus (no format=btm-corpus attribute)");
    const std::int64_t version = h5::get_int(root, "format_version");
    if (version != 1 && version != kCorpusFormatVersion)
      throw InputError("corpus format version " + std::to_string(version) +
                       ", this btm reads 1 and " + std::to_string(kCorpusFormatVersion) +
                       ": re-run btm prepare");
    CorpusInfo info;
    info.version = static_cast<int>(version);
    info.domain = h5::get_string(root, "domain");
    info.tokenizer = h5::get_string(root, "tokenizer");
    if (h5::has_attr(root, "vocab_hash")) info.vocab_hash = h5::get_string(root, "vocab_hash");
    info.vocab_size = static_cast<int>(h5::get_int(root, "vocab_size"));
    info.eot_token = static_cast<int>(h5::get_int(root, "eot_token"));
    if (h5::has_attr(root, "source")) info.source = h5::get_string(root, "source");
    if (h5::has_attr(root, "text_key")) info.text_key = h5::get_string(root, "text_key");
    if (h5::has_attr(root, "txt_documents"))
      info.txt_documents = h5::get_string(root, "txt_documents");
    for (int s = 0; s < 3; ++s) {
      const std::string name = kSplitNames[s];
      info.docs[s] = h5::get_int(root, "docs_" + name);
      info.bytes[s] = h5::get_int(root, "bytes_" + name);
      const std::vector<std::size_t> shape = h5::shape(root, name);
      if (shape.size() != 1) throw InputError("dataset /" + name + " is not 1-D");
      info.tokens[s] = static_cast<std::int64_t>(shape[0]);
      if (version >= 2)
        info.crc32[s] = static_cast<std::uint32_t>(h5::get_int(root, "crc32_" + name));
    }
    return info;
  } catch (const InputError& e) {
    throw InputError(file.string() + ": " + e.what());
  } catch (const SystemError& e) {
    throw InputError(file.string() + ": unreadable corpus (" + e.what() + ")");
  }
}

}  // namespace

CorpusInfo read_corpus_info(const fs::path& file) {
  h5::Handle f = h5::open_file(file, false);
  return read_info(f, file);
}

DomainCorpus load_corpus(const fs::path& file, int model_vocab) {
  h5::Handle f = h5::open_file(file, false);
  DomainCorpus corpus;
  corpus.info = read_info(f, file);
  if (model_vocab > 0 && corpus.info.vocab_size > model_vocab)
    throw InputError(file.string() + ": corpus vocabulary (" + corpus.info.tokenizer + ", " +
                     std::to_string(corpus.info.vocab_size) + " ids) is larger than the model's (" +
                     std::to_string(model_vocab) + "): set model.vocab_size to " +
                     std::to_string(corpus.info.vocab_size));
  for (int s = 0; s < 3; ++s) {
    const std::size_t n = static_cast<std::size_t>(corpus.info.tokens[s]);
    h5::Handle set(BTM_H5(H5Dopen2(f, kSplitNames[s], H5P_DEFAULT)));
    h5::Handle type(BTM_H5(H5Dget_type(set)));
    if (H5Tget_class(type) != H5T_INTEGER || H5Tget_size(type) != 2)
      throw InputError(file.string() + ": /" + kSplitNames[s] + " is not a uint16 token array");
    h5::Handle plist(BTM_H5(H5Dget_create_plist(set)));
    const haddr_t offset = H5Dget_offset(set);
    const bool contiguous = H5Pget_layout(plist) == H5D_CONTIGUOUS && offset != HADDR_UNDEF;
    if (n > 0 && contiguous && H5Tequal(type, H5T_NATIVE_UINT16) > 0) {
      struct stat st {};
      if (::stat(file.c_str(), &st) != 0 ||
          static_cast<std::size_t>(st.st_size) < offset + n * sizeof(std::uint16_t))
        throw InputError(file.string() + ": truncated (/" + kSplitNames[s] +
                         " extends past the end of the file)");
      corpus.splits[s] = TokenArray::mapped(file, static_cast<std::size_t>(offset), n);
    } else {
      corpus.splits[s] = TokenArray::owned(h5::read_array<std::uint16_t>(f, kSplitNames[s]));
    }
    const TokenArray& a = corpus.splits[s];
    if (corpus.info.version >= 2 && token_crc32(a.data(), a.size()) != corpus.info.crc32[s])
      throw InputError(file.string() + ": /" + kSplitNames[s] +
                       " does not match its CRC-32 (the file is damaged): re-run btm prepare, or "
                       "restore the file");
    const std::uint16_t max_id =
        a.size() ? *std::max_element(a.data(), a.data() + a.size()) : std::uint16_t{0};
    if (a.size() && max_id >= corpus.info.vocab_size)
      throw InputError(file.string() + ": /" + kSplitNames[s] + " holds token id " +
                       std::to_string(max_id) + " >= vocab_size " +
                       std::to_string(corpus.info.vocab_size) +
                       " (corrupt corpus: re-run btm prepare)");
  }
  return corpus;
}

void write_corpus(const fs::path& file, const CorpusInfo& info,
                  const std::vector<std::uint16_t> (&splits)[3]) {
  h5::AtomicFile out(file);
  hid_t root = out.root();
  h5::set_attr(root, "format", std::string("btm-corpus"));
  h5::set_attr(root, "format_version", static_cast<std::int64_t>(kCorpusFormatVersion));
  h5::set_attr(root, "domain", info.domain);
  h5::set_attr(root, "tokenizer", info.tokenizer);
  h5::set_attr(root, "vocab_hash", info.vocab_hash);
  h5::set_attr(root, "vocab_size", static_cast<std::int64_t>(info.vocab_size));
  h5::set_attr(root, "eot_token", static_cast<std::int64_t>(info.eot_token));
  h5::set_attr(root, "source", info.source);
  if (!info.text_key.empty()) h5::set_attr(root, "text_key", info.text_key);
  if (!info.txt_documents.empty()) h5::set_attr(root, "txt_documents", info.txt_documents);
  for (int s = 0; s < 3; ++s) {
    const std::string name = kSplitNames[s];
    h5::set_attr(root, "docs_" + name, info.docs[s]);
    h5::set_attr(root, "bytes_" + name, info.bytes[s]);
    h5::set_attr(root, "tokens_" + name, static_cast<std::int64_t>(splits[s].size()));
    h5::set_attr(root, "crc32_" + name,
                 static_cast<std::int64_t>(token_crc32(splits[s].data(), splits[s].size())));
    // Contiguous, so that training memory-maps it; the CRC-32 stands in for HDF5's checksum.
    h5::write_array(root, name, splits[s].data(), splits[s].size(), h5::Storage::contiguous);
  }
  out.commit();
}

std::vector<std::pair<std::size_t, std::size_t>> document_spans(const TokenArray& tokens, int eot) {
  std::vector<std::pair<std::size_t, std::size_t>> spans;
  std::size_t start = 0;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] == eot) {
      spans.emplace_back(start, i + 1);
      start = i + 1;
    }
  }
  if (start < tokens.size()) spans.emplace_back(start, tokens.size());
  return spans;
}

}  // namespace btm

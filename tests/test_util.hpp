// test_util.hpp: helpers shared by the tests: temporary directories, synthetic corpora and
// running the btm binary.
#pragma once

#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "btm/app/backends.hpp"
#include "btm/data/corpus.hpp"
#include "btm/data/tokenizer.hpp"
#include "btm/util/error.hpp"
#include "btm/util/rng.hpp"

namespace btm::test {

// The message of the InputError that f throws, or "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

// The smallest model the tests save and load: 1 layer x 8, 2 heads, context 4, 20 ids.
inline ModelConfig small_model() {
  ModelConfig m;
  m.n_layer = 1;
  m.n_head = 2;
  m.d_model = 8;
  m.context = 4;
  m.vocab_size = 20;
  m.vocab_multiple = 8;
  return m;
}

// The backends of this build, made once for the test program (main() makes them for btm).
inline const Backends& backends() {
  static const Backends built = make_builtin_backends();
  return built;
}

// A fresh directory under the system temp dir, removed at scope exit.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "btm") {
    std::string pattern = (std::filesystem::temp_directory_path() / (tag + "-XXXXXX")).string();
    if (!mkdtemp(pattern.data())) std::abort();
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// A byte-tokenizer corpus whose text is drawn from a domain-specific Markov chain, so domains
// differ and a small model can learn them. Documents of 20-200 tokens end with eot (256).
inline void write_synthetic_corpus(const std::filesystem::path& dir, const std::string& domain,
                                   std::uint64_t seed, std::size_t train_tokens) {
  Rng rng(seed * 7919 + 17);
  // Each domain uses its own 12-letter alphabet and a sparse transition table.
  std::array<int, 12> alphabet{};
  for (int i = 0; i < 12; ++i) alphabet[i] = 'a' + static_cast<int>((seed * 5 + i * 3) % 26);
  std::array<std::array<int, 3>, 12> next{};
  for (auto& row : next)
    for (int& n : row) n = static_cast<int>(rng.next_u64() % 12);
  std::vector<std::uint16_t> splits[3];
  const std::size_t sizes[3] = {train_tokens, train_tokens / 8 + 300, train_tokens / 8 + 300};
  CorpusInfo info;
  info.domain = domain;
  info.tokenizer = "byte";
  info.vocab_size = 257;
  info.vocab_hash = make_tokenizer("byte")->vocab_hash();
  info.eot_token = 256;
  info.source = "synthetic test corpus";
  for (int s = 0; s < 3; ++s) {
    int state = 0;
    while (splits[s].size() < sizes[s]) {
      const int length = 20 + static_cast<int>(rng.next_u64() % 180);
      for (int t = 0; t < length; ++t) {
        state = next[static_cast<std::size_t>(state)][rng.next_u64() % 3];
        splits[s].push_back(static_cast<std::uint16_t>(alphabet[static_cast<std::size_t>(state)]));
      }
      splits[s].push_back(256);
      ++info.docs[s];
    }
    info.bytes[s] = static_cast<std::int64_t>(splits[s].size());
  }
  write_corpus(corpus_path(dir, domain), info, splits);
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs a shell command, capturing its output.
inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buffer{};
  while (std::fgets(buffer.data(), buffer.size(), pipe)) result.output += buffer.data();
  const int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// The btm executable (set by tests/CMakeLists.txt).
inline std::string btm_binary() {
  const char* path = std::getenv("BTM_BINARY");
  return path ? path : "btm";
}

inline std::string source_dir() {
  const char* path = std::getenv("BTM_SOURCE_DIR");
  return path ? path : BTM_SOURCE_DIR;
}

// Runs `btm ARGS` as a one-rank MPI job (the binary initialises MPI as a singleton).
inline CommandResult run_btm(const std::string& args) {
  return run_command(btm_binary() + " " + args);
}

}  // namespace btm::test

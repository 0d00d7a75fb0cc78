// prepare.hpp: `btm prepare`, text -> per-domain tokenized corpora (format: corpus.hpp).
// INPUT/DOMAIN/ holds .txt files (one document each, or cut into documents by lines) and .jsonl /
// .jsonl.gz files (one JSON object with a "text" string per line, one document each; readers.hpp
// reads them). The files of a
// domain are spread over the ranks of a communicator; the result does not depend on how many ranks
// there are.
// With clusters (a clusters.h5 of `btm cluster`, method/cluster.hpp) the input is one unlabelled
// corpus: every document file in it or below it (folders are not domains), and each document goes
// to the domain of its nearest centre, OUT/cluster_00.h5 ... (one per cluster).
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <string>
#include <vector>

#include "btm/data/readers.hpp"
#include "btm/dist/comm.hpp"

namespace btm {

struct PrepareOptions {
  std::filesystem::path input;       // one subdirectory per domain
  std::filesystem::path out;         // the corpus directory: OUT/DOMAIN.h5
  std::string tokenizer = "gpt2";    // byte | gpt2
  std::filesystem::path bpe_dir;     // gpt2 files (empty: make_tokenizer's default search)
  std::vector<std::string> domains;  // empty: every subdirectory of input
  double valid_fraction = 0.05;      // of the documents, chosen by a permutation seeded by seed
  double test_fraction = 0.05;
  std::uint64_t seed = 1234;
  // Per-domain cap in MB (10^6 bytes of text): documents are taken in order (files sorted by
  // path, then lines) until the cap is reached; the last one may cross it. 0: no cap.
  double max_mb = 0;
  std::filesystem::path clusters;  // empty: labelled domains (the subdirectories of input)
  ReaderOptions reader;  // the JSON text key; how .txt files are cut into documents
};

// What one domain came to (the same on every rank).
struct PreparedDomain {
  std::string domain;
  std::filesystem::path file;
  std::int64_t files = 0;  // files that contributed documents
  std::int64_t docs[3] = {0, 0, 0};
  std::int64_t bytes[3] = {0, 0, 0};
  std::int64_t tokens[3] = {0, 0, 0};
  double seconds = 0;               // wall time of the domain
  double rank_mb_per_s_min = 0;     // tokenisation throughput of the slowest rank
  double rank_mb_per_s_mean = 0;    // ... averaged over the ranks that had work
  double assign_mb_per_s_mean = 0;  // with clusters: embedding + nearest centre, per rank
};

// Collective over `comm`: every rank must call it with the same options. Rank 0 writes each
// domain atomically once every rank has finished it without error. An InputError found on any
// rank (bad input, named with its path) is thrown on every rank, and that domain is not written.
// Progress lines go to `log` on rank 0 (nullptr: quiet).
std::vector<PreparedDomain> prepare_corpus(const PrepareOptions& options, MpiComm& comm,
                                           std::ostream* log);

}  // namespace btm

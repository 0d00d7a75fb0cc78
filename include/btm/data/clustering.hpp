// clustering.hpp: `btm cluster`, c-BTM's clustering fitted on an unlabelled corpus (a directory
// of .txt / .jsonl / .jsonl.gz files read as prepare reads them; folders below it are read too
// and are not domains). The files are spread over the ranks; each rank tokenizes a seeded sample
// of its documents, and the fit (method/cluster.hpp) runs over all ranks. The result is
// clusters.h5, which `btm prepare --clusters` and the evaluation route with.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <string>

#include "btm/data/readers.hpp"
#include "btm/dist/comm.hpp"
#include "btm/method/cluster.hpp"

namespace btm {

struct ClusterOptions {
  std::filesystem::path input;
  ReaderOptions reader;            // the JSON text key; how .txt files are cut into documents
  std::filesystem::path out;       // clusters.h5
  std::string tokenizer = "gpt2";  // its ids are the TF-IDF vocabulary
  std::filesystem::path bpe_dir;
  ClusterFitOptions fit;
  // Text per rank in the sample, in MB (10^6 bytes): each document is taken with the
  // probability that fills it from the whole corpus (by a hash of its file, place and the seed),
  // until the rank has this much. 0: every document.
  double sample_mb = 20;
};

struct ClusterResult {
  ClusterModel model;
  double read_seconds = 0;  // reading and tokenizing the sample (the slowest rank)
  double fit_seconds = 0;   // TF-IDF, SVD and k-means
};

// Collective over `comm`, with the same options on every rank. Rank 0 writes options.out
// atomically once the fit has succeeded everywhere; on any InputError (an empty corpus, more
// clusters than sampled documents, ...) nothing is written and every rank throws it.
ClusterResult cluster_corpus(const ClusterOptions& options, MpiComm& comm, std::ostream* log);

}  // namespace btm

// cluster.hpp: c-BTM's unsupervised domains (docs/btm.md "c-BTM"). A document is a TF-IDF
// vector over the tokenizer's ids, projected on a truncated SVD basis and L2-normalised (its
// embedding h); balanced k-means gives K centres, and a document's cluster is its nearest centre.
// An ELM of cluster j is weighted on a prefix by softmax_j(-||h(x_<t) - c_j||^2 / T), top-k.
// The fit is collective over an MpiComm: each rank holds some rows of the document matrix, and
// only vectors of the vocabulary's or the centres' size travel. The result is clusters.h5.
//
// The TF-IDF rows are L2-normalised before the SVD (as sklearn's TfidfVectorizer does), which
// shapes the basis; an embedding is normalised again after the projection, so the first
// normalisation cancels there: h = normalise(sum_v count_v idf_v basis_v). That is what makes
// the prefix embedding an O(dims) update per token (PrefixRouter).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "btm/dist/comm.hpp"

namespace btm {

constexpr int kClustersFormatVersion = 1;

// The term counts of one document: ids sorted and unique, end-of-text left out.
struct TermCounts {
  std::vector<std::uint32_t> ids;
  std::vector<double> counts;
};
TermCounts term_counts(std::span<const std::uint16_t> tokens, int eot);

// The fitted clustering (clusters.h5).
struct ClusterModel {
  std::string tokenizer;            // the tokenizer's name: its ids are the vocabulary
  int vocab_size = 0;               // V
  std::uint64_t vocab_hash = 0;     // of the tokenizer's id -> text table (data/tokenizer.hpp)
  int eot_token = 0;                // not a term
  std::size_t dims = 0;             // of the SVD basis (100, or fewer on a smaller sample)
  std::size_t K = 0;                // clusters
  std::vector<double> idf;          // [V] log((1 + n) / (1 + df_v)) + 1
  std::vector<double> basis;        // [V x dims] row v: token v's direction
  std::vector<double> centres;      // [K x dims]
  double temperature = 0.1;         // T of the routing weights
  std::uint64_t seed = 0;           // of the SVD's random test matrix and the k-means start
  std::int64_t sample_docs = 0;     // documents the fit used
  std::int64_t sample_bytes = 0;    // ... and their text bytes
  std::vector<std::int64_t> sizes;  // [K] documents of the sample in each cluster (balanced)

  // The unit embedding of a document's tokens (all zero when it has no term).
  std::vector<double> embed(std::span<const std::uint16_t> tokens) const;
  // The nearest centre (greedy: no balancing at inference; ties: the lower index).
  std::size_t nearest(std::span<const double> h) const;
};

// The name of cluster c as a domain of the prepared corpus: cluster_00, cluster_01, ... (three
// digits from 100 clusters on); the cluster of such a name, nullopt for other names.
std::string cluster_name(std::size_t c, std::size_t K);
std::optional<std::size_t> cluster_of(const std::string& domain);

struct ClusterFitOptions {
  std::size_t clusters = 8;     // K
  std::size_t dims = 100;       // of the truncated SVD
  std::size_t oversample = 10;  // extra columns of the randomised range finder
  int power_iterations = 4;     // passes of A^T A over the range (sklearn's randomized SVD: 5)
  int max_iterations = 50;      // of k-means (it stops earlier once no document moves)
  std::uint64_t seed = 1234;
  double temperature = 0.1;
};

// Collective over `comm`: `docs` are this rank's rows of the sample. InputError (on every rank)
// when the sample has fewer documents than clusters or no document with a term. Progress lines
// go to `log` on rank 0 (nullptr: quiet).
ClusterModel fit_clusters(const std::vector<TermCounts>& docs, int vocab_size, int eot,
                          const ClusterFitOptions& options, MpiComm& comm, std::ostream* log);

// ---- the pieces of the fit (tested on their own) ----------------------------------------------

// Right singular vectors (row-major [cols x dims], columns by decreasing singular value) and
// the singular values of the sparse matrix whose rows are `rows` (over every rank of `comm`;
// entries are `counts`, already weighted), by the randomised range finder with power iterations.
struct Svd {
  std::vector<double> right;   // [cols x dims]
  std::vector<double> values;  // [dims]
};
Svd randomized_svd(const std::vector<TermCounts>& rows, std::size_t cols,
                   const ClusterFitOptions& options, MpiComm& comm);

// Balanced assignment of n points to K clusters from their distances [n x K]: pairs are taken
// nearest first, and a cluster takes no more than ceil(n / K) points, and only n mod K of them
// take more than floor(n / K), so every cluster has floor or ceil of n / K (c-BTM's balancing
// while estimating the centres). n >= K.
std::vector<std::uint32_t> balanced_assignment(std::span<const double> distances, std::size_t n,
                                               std::size_t K);

// Balanced k-means of the unit vectors `points` ([n_r x dims], this rank's) over `comm`:
// K centres [K x dims] and the sample's cluster sizes. Seeded start: K distinct points.
struct KMeans {
  std::vector<double> centres;
  std::vector<std::int64_t> sizes;
  int iterations = 0;
};
KMeans balanced_kmeans(const std::vector<double>& points, std::size_t dims, std::size_t K,
                       const ClusterFitOptions& options, MpiComm& comm);

// ---- routing --------------------------------------------------------------------------------

// The prefix embedding, updated per token: add(v) adds idf_v basis_v to the running projection
// (the counts of the TF-IDF vector never need to be kept), weights() normalises it and takes
// softmax_j(-||h - c_j||^2 / T) over the centres `experts` (the clusters of the ELMs at hand, in
// their order). The empty prefix (h = 0) gets the softmax of -||c_j||^2 / T.
class PrefixRouter {
 public:
  PrefixRouter(const ClusterModel& model, std::vector<std::size_t> experts, double temperature);
  void reset();
  void add(std::uint16_t token);
  // One weight per expert, summing to 1.
  void weights(std::span<double> out) const;
  std::size_t experts() const { return experts_.size(); }

 private:
  const ClusterModel& model_;
  std::vector<std::size_t> experts_;
  double temperature_;
  std::vector<double> y_;
  std::vector<double> centre_norm2_;  // [expert]
};

// The routing weights of every scored position of `blocks` blocks of T + 1 tokens starting at
// `tokens` (inputs t, targets t + 1, each block a fresh prefix): [blocks * T x experts], row
// b * T + t weighs the ELMs on the prediction of token t + 1 from tokens 0..t of block b.
std::vector<double> route_blocks(const PrefixRouter& router, const std::uint16_t* tokens,
                                 std::size_t blocks, int T);

// ---- clusters.h5 ------------------------------------------------------------------------------
//   attributes format = "btm-clusters", format_version, tokenizer, vocab_size, vocab_hash,
//              eot_token, K, dims, temperature, seed, sample_docs, sample_bytes
//   datasets  /idf [V], /basis [V x dims], /centres [K x dims], /sizes [K] (checksummed)

// Written atomically (h5::AtomicFile): an existing file is replaced only by a whole new one.
void write_clusters(const std::filesystem::path& file, const ClusterModel& model);
// InputError naming the file when it is missing, truncated, damaged or not a clusters file.
ClusterModel read_clusters(const std::filesystem::path& file);
// InputError naming the file when it was fitted with another tokenizer (name, size or ids).
// vocab_hash 0: not known here (a corpus records no hash), only name and size are compared.
void check_cluster_tokenizer(const ClusterModel& model, const std::filesystem::path& file,
                             const std::string& tokenizer, int vocab_size,
                             std::uint64_t vocab_hash);

}  // namespace btm

#include "btm/method/cluster.hpp"
#include "btm/util/clock.hpp"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <ostream>

#include "btm/io/h5.hpp"
#include "btm/util/error.hpp"
#include "btm/util/rng.hpp"

// LAPACK through OpenBLAS (column-major, Fortran calling convention).
extern "C" {
void dgeqrf_(const int* m, const int* n, double* a, const int* lda, double* tau, double* work,
             const int* lwork, int* info);
void dorgqr_(const int* m, const int* n, const int* k, double* a, const int* lda, const double* tau,
             double* work, const int* lwork, int* info);
void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w,
             double* work, const int* lwork, int* iwork, const int* liwork, int* info);
}

namespace btm {

namespace fs = std::filesystem;

namespace {

void check_lapack(int info, const char* routine) {
  if (info != 0)
    throw SystemError(std::string(routine) + " failed (info " + std::to_string(info) + ") at " +
                      __FILE__);
}

int as_int(std::size_t n) {
  if (n > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    throw InputError("a matrix of the clustering is too large for LAPACK's 32-bit sizes");
  return static_cast<int>(n);
}

// Orthonormal columns spanning the columns of Y ([rows x cols] row-major), in place (QR).
void orthonormalise(std::vector<double>& Y, std::size_t rows, std::size_t cols) {
  const int m = as_int(rows), n = as_int(cols);
  std::vector<double> a(rows * cols);  // column-major copy
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) a[c * rows + r] = Y[r * cols + c];
  std::vector<double> tau(cols);
  int info = 0, lwork = -1;
  double query = 0;
  dgeqrf_(&m, &n, a.data(), &m, tau.data(), &query, &lwork, &info);
  check_lapack(info, "dgeqrf");
  lwork = std::max(1, static_cast<int>(query));
  std::vector<double> work(static_cast<std::size_t>(lwork));
  dgeqrf_(&m, &n, a.data(), &m, tau.data(), work.data(), &lwork, &info);
  check_lapack(info, "dgeqrf");
  lwork = -1;
  dorgqr_(&m, &n, &n, a.data(), &m, tau.data(), &query, &lwork, &info);
  check_lapack(info, "dorgqr");
  lwork = std::max(1, static_cast<int>(query));
  work.assign(static_cast<std::size_t>(lwork), 0.0);
  dorgqr_(&m, &n, &n, a.data(), &m, tau.data(), work.data(), &lwork, &info);
  check_lapack(info, "dorgqr");
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) Y[r * cols + c] = a[c * rows + r];
}

// out [n_r x l] = A_r Q, Q [cols x l] row-major.
std::vector<double> times(const std::vector<TermCounts>& rows, const std::vector<double>& Q,
                          std::size_t l) {
  std::vector<double> out(rows.size() * l, 0.0);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    double* o = out.data() + i * l;
    for (std::size_t z = 0; z < rows[i].ids.size(); ++z)
      cblas_daxpy(static_cast<int>(l), rows[i].counts[z], Q.data() + rows[i].ids[z] * l, 1, o, 1);
  }
  return out;
}

// A^T M over every rank ([cols x l]), M [n_r x l].
std::vector<double> transpose_times(const std::vector<TermCounts>& rows,
                                    const std::vector<double>& M, std::size_t cols, std::size_t l,
                                    MpiComm& comm) {
  std::vector<double> out(cols * l, 0.0);
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (std::size_t z = 0; z < rows[i].ids.size(); ++z)
      cblas_daxpy(static_cast<int>(l), rows[i].counts[z], M.data() + i * l, 1,
                  out.data() + rows[i].ids[z] * l, 1);
  comm.allreduce_sum(out.data(), out.size());
  return out;
}

double squared_distance(const double* a, const double* b, std::size_t n) {
  double s = 0;
  for (std::size_t i = 0; i < n; ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return s;
}

void normalise(std::span<double> v) {
  double s = 0;
  for (double x : v) s += x * x;
  if (s <= 0) return;
  const double inv = 1.0 / std::sqrt(s);
  for (double& x : v) x *= inv;
}

void say(std::ostream* log, const MpiComm& comm, const std::string& line) {
  if (log && comm.rank() == 0) *log << "cluster: " << line << std::endl;
}

}  // namespace

TermCounts term_counts(std::span<const std::uint16_t> tokens, int eot) {
  std::vector<std::uint32_t> ids;
  ids.reserve(tokens.size());
  for (std::uint16_t t : tokens)
    if (t != eot) ids.push_back(t);
  std::sort(ids.begin(), ids.end());
  TermCounts tc;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i > 0 && ids[i] == ids[i - 1]) {
      tc.counts.back() += 1;
      continue;
    }
    tc.ids.push_back(ids[i]);
    tc.counts.push_back(1);
  }
  return tc;
}

std::vector<double> ClusterModel::embed(std::span<const std::uint16_t> tokens) const {
  std::vector<double> h(dims, 0.0);
  // One basis row per distinct token (a row is dims doubles, far apart in the basis).
  const TermCounts tc = term_counts(tokens, eot_token);
  for (std::size_t z = 0; z < tc.ids.size(); ++z)
    if (tc.ids[z] < static_cast<std::uint32_t>(vocab_size))
      cblas_daxpy(static_cast<int>(dims), tc.counts[z] * idf[tc.ids[z]],
                  basis.data() + std::size_t{tc.ids[z]} * dims, 1, h.data(), 1);
  normalise(h);
  return h;
}

std::size_t ClusterModel::nearest(std::span<const double> h) const {
  std::size_t best = 0;
  double best_d = std::numeric_limits<double>::infinity();
  for (std::size_t c = 0; c < K; ++c) {
    const double d = squared_distance(h.data(), centres.data() + c * dims, dims);
    if (d < best_d) best_d = d, best = c;
  }
  return best;
}

std::string cluster_name(std::size_t c, std::size_t K) {
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "cluster_%0*zu", K > 100 ? 3 : 2, c);
  return buffer;
}

std::optional<std::size_t> cluster_of(const std::string& domain) {
  const std::string prefix = "cluster_";
  if (domain.size() <= prefix.size() || domain.compare(0, prefix.size(), prefix) != 0)
    return std::nullopt;
  std::size_t c = 0;
  for (std::size_t i = prefix.size(); i < domain.size(); ++i) {
    if (domain[i] < '0' || domain[i] > '9') return std::nullopt;
    c = c * 10 + static_cast<std::size_t>(domain[i] - '0');
  }
  return c;
}

Svd randomized_svd(const std::vector<TermCounts>& rows, std::size_t cols,
                   const ClusterFitOptions& options, MpiComm& comm) {
  const std::size_t dims = std::min(options.dims, cols);
  const std::size_t l = std::min(dims + options.oversample, cols);
  // The same Gaussian test matrix on every rank (seeded), so every rank holds the same range.
  std::vector<double> Q(cols * l);
  Rng rng(mix64(options.seed ^ 0x5356445f72616e67ull));
  for (double& x : Q) x = rng.normal();
  std::vector<double> Y = transpose_times(rows, times(rows, Q, l), cols, l, comm);
  for (int q = 0; q < options.power_iterations; ++q) {
    orthonormalise(Y, cols, l);
    Y = transpose_times(rows, times(rows, Y, l), cols, l, comm);
  }
  orthonormalise(Y, cols, l);  // Q: an orthonormal basis of A's leading row space
  // A Q = U' S W^T: the small Gram (A Q)^T (A Q) = W S^2 W^T gives the right singular vectors
  // Q W of A.
  const std::vector<double> B = times(rows, Y, l);
  std::vector<double> G(l * l, 0.0);
  if (!rows.empty())
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, as_int(l), as_int(l), as_int(rows.size()),
                1.0, B.data(), as_int(l), B.data(), as_int(l), 0.0, G.data(), as_int(l));
  comm.allreduce_sum(G.data(), G.size());
  // dsyevd on the symmetric G (row- and column-major alike): ascending eigenvalues, the
  // eigenvectors in the columns of the column-major result, i.e. its rows here.
  std::vector<double> eig(l);
  const int n = as_int(l);
  int info = 0, lwork = -1, liwork = -1, iquery = 0;
  double query = 0;
  dsyevd_("V", "U", &n, G.data(), &n, eig.data(), &query, &lwork, &iquery, &liwork, &info);
  check_lapack(info, "dsyevd");
  lwork = std::max(1, static_cast<int>(query));
  liwork = std::max(1, iquery);
  std::vector<double> work(static_cast<std::size_t>(lwork));
  std::vector<int> iwork(static_cast<std::size_t>(liwork));
  dsyevd_("V", "U", &n, G.data(), &n, eig.data(), work.data(), &lwork, iwork.data(), &liwork,
          &info);
  check_lapack(info, "dsyevd");
  std::vector<double> W(l * dims);  // [l x dims], largest eigenvalue first
  Svd svd;
  for (std::size_t k = 0; k < dims; ++k) {
    const std::size_t e = l - 1 - k;
    svd.values.push_back(std::sqrt(std::max(eig[e], 0.0)));
    for (std::size_t i = 0; i < l; ++i) W[i * dims + k] = G[e * l + i];
  }
  svd.right.assign(cols * dims, 0.0);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, as_int(cols), as_int(dims), as_int(l), 1.0,
              Y.data(), as_int(l), W.data(), as_int(dims), 0.0, svd.right.data(), as_int(dims));
  // A fixed sign per vector (its largest entry positive), so a basis does not flip between fits.
  for (std::size_t k = 0; k < dims; ++k) {
    std::size_t arg = 0;
    for (std::size_t v = 0; v < cols; ++v)
      if (std::abs(svd.right[v * dims + k]) > std::abs(svd.right[arg * dims + k])) arg = v;
    if (svd.right[arg * dims + k] < 0)
      for (std::size_t v = 0; v < cols; ++v) svd.right[v * dims + k] *= -1;
  }
  return svd;
}

std::vector<std::uint32_t> balanced_assignment(std::span<const double> distances, std::size_t n,
                                               std::size_t K) {
  if (K == 0 || n < K || distances.size() != n * K)
    throw InputError("balanced assignment: " + std::to_string(n) + " points for " +
                     std::to_string(K) + " clusters");
  std::vector<std::size_t> order(n * K);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return distances[a] < distances[b]; });
  const std::size_t floor = n / K;
  std::size_t extras = n % K;  // clusters that may still take floor + 1
  constexpr std::uint32_t kNone = std::numeric_limits<std::uint32_t>::max();
  std::vector<std::uint32_t> assigned(n, kNone);
  std::vector<std::size_t> count(K, 0);
  std::size_t done = 0;
  for (std::size_t pair : order) {
    const std::size_t i = pair / K, c = pair % K;
    if (assigned[i] != kNone) continue;
    if (count[c] >= floor) {
      if (count[c] > floor || extras == 0) continue;
      --extras;
    }
    assigned[i] = static_cast<std::uint32_t>(c);
    ++count[c];
    if (++done == n) break;
  }
  return assigned;
}

KMeans balanced_kmeans(const std::vector<double>& points, std::size_t dims, std::size_t K,
                       const ClusterFitOptions& options, MpiComm& comm) {
  const std::size_t mine = points.size() / dims;
  std::vector<std::int64_t> counts(static_cast<std::size_t>(comm.size()));
  const std::int64_t my_count = static_cast<std::int64_t>(mine);
  comm.allgather(&my_count, counts.data(), sizeof(my_count));
  std::size_t n = 0, first = 0;
  for (int r = 0; r < comm.size(); ++r) {
    if (r == comm.rank()) first = n;
    n += static_cast<std::size_t>(counts[static_cast<std::size_t>(r)]);
  }
  if (n < K)
    throw InputError("--clusters " + std::to_string(K) + " is more than the " + std::to_string(n) +
                     " documents of the sample: lower --clusters or raise --sample-mb");
  // Start: K distinct points of a seeded permutation, each sent by the rank that holds it.
  std::vector<std::size_t> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  Rng rng(mix64(options.seed ^ 0x6b6d65616e73ull));
  for (std::size_t i = 0; i < K; ++i)
    std::swap(perm[i], perm[i + static_cast<std::size_t>(rng.next_u64() % (n - i))]);
  KMeans km;
  km.centres.assign(K * dims, 0.0);
  for (std::size_t c = 0; c < K; ++c)
    if (perm[c] >= first && perm[c] < first + mine)
      std::copy_n(points.data() + (perm[c] - first) * dims, dims, km.centres.data() + c * dims);
  comm.allreduce_sum(km.centres.data(), km.centres.size());

  std::vector<std::uint32_t> assignment;
  std::vector<double> distances(mine * K);
  for (km.iterations = 1; km.iterations <= options.max_iterations; ++km.iterations) {
    for (std::size_t i = 0; i < mine; ++i)
      for (std::size_t c = 0; c < K; ++c)
        distances[i * K + c] =
            squared_distance(points.data() + i * dims, km.centres.data() + c * dims, dims);
    // The balancing needs every distance at once: rank 0 assigns, every rank gets the result.
    std::vector<char> bytes(reinterpret_cast<const char*>(distances.data()),
                            reinterpret_cast<const char*>(distances.data() + distances.size()));
    const std::vector<std::vector<char>> gathered = comm.gather_to_root(bytes);
    std::vector<std::uint32_t> next;
    if (comm.rank() == 0) {
      std::vector<double> all;
      all.reserve(n * K);
      for (const std::vector<char>& b : gathered) {
        const double* d = reinterpret_cast<const double*>(b.data());
        all.insert(all.end(), d, d + b.size() / sizeof(double));
      }
      next = balanced_assignment(all, n, K);
    }
    comm.broadcast_vector(next, 0);
    const bool moved = next != assignment;
    assignment = std::move(next);
    // New centres: the means of their points (sums over the ranks).
    std::vector<double> sums(K * dims + K, 0.0);
    for (std::size_t i = 0; i < mine; ++i) {
      const std::size_t c = assignment[first + i];
      for (std::size_t k = 0; k < dims; ++k) sums[c * dims + k] += points[i * dims + k];
      sums[K * dims + c] += 1;
    }
    comm.allreduce_sum(sums.data(), sums.size());
    for (std::size_t c = 0; c < K; ++c)
      for (std::size_t k = 0; k < dims; ++k)
        km.centres[c * dims + k] = sums[c * dims + k] / std::max(sums[K * dims + c], 1.0);
    if (!moved) break;
  }
  km.iterations = std::min(km.iterations, options.max_iterations);
  km.sizes.assign(K, 0);
  for (std::uint32_t c : assignment) ++km.sizes[c];
  return km;
}

ClusterModel fit_clusters(const std::vector<TermCounts>& docs, int vocab_size, int eot,
                          const ClusterFitOptions& options, MpiComm& comm, std::ostream* log) {
  const std::size_t V = static_cast<std::size_t>(vocab_size);
  ClusterModel model;
  model.vocab_size = vocab_size;
  model.eot_token = eot;
  model.K = options.clusters;
  model.seed = options.seed;
  model.temperature = options.temperature;
  if (options.clusters == 0) throw InputError("--clusters must be at least 1");
  // Documents without a term (only end-of-text) have no direction: left out of the fit.
  std::vector<TermCounts> rows;
  for (const TermCounts& d : docs)
    if (!d.ids.empty()) rows.push_back(d);
  // Document frequencies and the idf (sklearn's smooth idf).
  std::vector<std::int64_t> df(V + 1, 0);
  for (const TermCounts& d : rows)
    for (std::uint32_t id : d.ids) ++df[id];
  df[V] = static_cast<std::int64_t>(rows.size());
  comm.allreduce_sum(df.data(), df.size());
  const std::int64_t n = df[V];
  model.sample_docs = n;
  if (n == 0)
    throw InputError(
        "the sample has no document with any text: give btm cluster a corpus with text in it");
  if (static_cast<std::size_t>(n) < options.clusters)
    throw InputError("--clusters " + std::to_string(options.clusters) + " is more than the " +
                     std::to_string(n) +
                     " documents of the sample: lower --clusters or raise --sample-mb");
  model.idf.resize(V);
  for (std::size_t v = 0; v < V; ++v)
    model.idf[v] =
        std::log((1.0 + static_cast<double>(n)) / (1.0 + static_cast<double>(df[v]))) + 1.0;
  // TF-IDF rows, L2-normalised.
  for (TermCounts& d : rows) {
    double s = 0;
    for (std::size_t z = 0; z < d.ids.size(); ++z) {
      d.counts[z] *= model.idf[d.ids[z]];
      s += d.counts[z] * d.counts[z];
    }
    for (double& x : d.counts) x /= std::sqrt(s);
  }
  say(log, comm,
      std::to_string(n) + " documents, TF-IDF over " + std::to_string(V) + " ids; randomised SVD");
  ClusterFitOptions svd_options = options;
  svd_options.dims = std::min<std::size_t>(options.dims, static_cast<std::size_t>(n));
  const auto svd_start = std::chrono::steady_clock::now();
  const Svd svd = randomized_svd(rows, V, svd_options, comm);
  const double svd_seconds = seconds_since(svd_start);
  model.dims = svd.values.size();
  model.basis = svd.right;
  // The sample's embeddings: projected rows, L2-normalised.
  std::vector<double> points = times(rows, model.basis, model.dims);
  for (std::size_t i = 0; i < rows.size(); ++i)
    normalise(std::span<double>(points.data() + i * model.dims, model.dims));
  say(log, comm,
      std::to_string(model.dims) + " dimensions (singular values " +
          std::to_string(svd.values.front()) + " .. " + std::to_string(svd.values.back()) +
          ") in " + std::to_string(svd_seconds) +
          " s; balanced k-means, K = " + std::to_string(model.K));
  const auto kmeans_start = std::chrono::steady_clock::now();
  const KMeans km = balanced_kmeans(points, model.dims, model.K, options, comm);
  model.centres = km.centres;
  model.sizes = km.sizes;
  std::string sizes;
  for (std::int64_t s : km.sizes) sizes += (sizes.empty() ? "" : " ") + std::to_string(s);
  say(log, comm,
      std::to_string(km.iterations) + " iterations in " +
          std::to_string(seconds_since(kmeans_start)) + " s; cluster sizes " + sizes);
  return model;
}

PrefixRouter::PrefixRouter(const ClusterModel& model, std::vector<std::size_t> experts,
                           double temperature)
    : model_(model), experts_(std::move(experts)), temperature_(temperature), y_(model.dims, 0.0) {
  if (!(temperature > 0) || !std::isfinite(temperature))
    throw InputError("the routing temperature must be > 0, not " + std::to_string(temperature));
  if (experts_.empty()) throw InputError("routing needs at least one cluster ELM");
  for (std::size_t c : experts_) {
    if (c >= model.K)
      throw InputError("an ELM of cluster " + std::to_string(c) + ", but the clustering has " +
                       std::to_string(model.K) +
                       " clusters: route with the clusters.h5 the corpus "
                       "was prepared with");
    double s = 0;
    for (std::size_t k = 0; k < model.dims; ++k)
      s += model.centres[c * model.dims + k] * model.centres[c * model.dims + k];
    centre_norm2_.push_back(s);
  }
}

void PrefixRouter::reset() {
  std::fill(y_.begin(), y_.end(), 0.0);
}

void PrefixRouter::add(std::uint16_t token) {
  if (token == model_.eot_token || token >= model_.vocab_size) return;
  cblas_daxpy(static_cast<int>(model_.dims), model_.idf[token],
              model_.basis.data() + std::size_t{token} * model_.dims, 1, y_.data(), 1);
}

void PrefixRouter::weights(std::span<double> out) const {
  const std::size_t d = model_.dims;
  double norm2 = 0;
  for (double x : y_) norm2 += x * x;
  const double inv = norm2 > 0 ? 1.0 / std::sqrt(norm2) : 0.0;
  const double h2 = norm2 > 0 ? 1.0 : 0.0;
  // ||h - c||^2 = ||h||^2 - 2 h.c + ||c||^2; the softmax in a numerically safe form.
  double most = -std::numeric_limits<double>::infinity();
  for (std::size_t j = 0; j < experts_.size(); ++j) {
    const double dot = inv * cblas_ddot(static_cast<int>(d), y_.data(), 1,
                                        model_.centres.data() + experts_[j] * d, 1);
    out[j] = -(h2 - 2 * dot + centre_norm2_[j]) / temperature_;
    most = std::max(most, out[j]);
  }
  double sum = 0;
  for (std::size_t j = 0; j < experts_.size(); ++j) sum += (out[j] = std::exp(out[j] - most));
  for (std::size_t j = 0; j < experts_.size(); ++j) out[j] /= sum;
}

std::vector<double> route_blocks(const PrefixRouter& router, const std::uint16_t* tokens,
                                 std::size_t blocks, int T) {
  const std::size_t E = router.experts(), t_len = static_cast<std::size_t>(T);
  std::vector<double> out(blocks * t_len * E);
  PrefixRouter r = router;
  for (std::size_t b = 0; b < blocks; ++b) {
    r.reset();
    for (std::size_t t = 0; t < t_len; ++t) {
      r.add(tokens[b * t_len + t]);
      r.weights(std::span<double>(out.data() + (b * t_len + t) * E, E));
    }
  }
  return out;
}

// ---- clusters.h5 ------------------------------------------------------------------------------

void write_clusters(const fs::path& file, const ClusterModel& m) {
  h5::AtomicFile out(file);
  const hid_t root = out.root();
  h5::set_attr(root, "format", std::string("btm-clusters"));
  h5::set_attr(root, "format_version", static_cast<std::int64_t>(kClustersFormatVersion));
  h5::set_attr(root, "tokenizer", m.tokenizer);
  h5::set_attr(root, "vocab_size", static_cast<std::int64_t>(m.vocab_size));
  // As text: an HDF5 attribute of btm is signed, the hash uses all 64 bits.
  h5::set_attr(root, "vocab_hash", std::to_string(m.vocab_hash));
  h5::set_attr(root, "eot_token", static_cast<std::int64_t>(m.eot_token));
  h5::set_attr(root, "K", static_cast<std::int64_t>(m.K));
  h5::set_attr(root, "dims", static_cast<std::int64_t>(m.dims));
  h5::set_attr(root, "temperature", m.temperature);
  h5::set_attr(root, "seed", std::to_string(m.seed));
  h5::set_attr(root, "sample_docs", m.sample_docs);
  h5::set_attr(root, "sample_bytes", m.sample_bytes);
  h5::write_array(root, "idf", m.idf.data(), m.idf.size());
  h5::write_matrix(root, "basis", m.basis.data(), static_cast<std::size_t>(m.vocab_size), m.dims);
  h5::write_matrix(root, "centres", m.centres.data(), m.K, m.dims);
  h5::write_array(root, "sizes", m.sizes.data(), m.sizes.size());
  out.commit();
}

ClusterModel read_clusters(const fs::path& file) {
  const std::string what = file.string() + ": ";
  const std::string remedy = ": fit it again with btm cluster";
  h5::Handle f = h5::open_file(file, false);  // its errors name the file
  try {
    if (!h5::has_attr(f, "format") || h5::get_string(f, "format") != "btm-clusters")
      throw InputError("not a clusters file of btm cluster (no format=btm-clusters attribute)");
    if (h5::get_int(f, "format_version") != kClustersFormatVersion)
      throw InputError("clusters format version " +
                       std::to_string(h5::get_int(f, "format_version")) + ", this btm reads " +
                       std::to_string(kClustersFormatVersion) + remedy);
    ClusterModel m;
    m.tokenizer = h5::get_string(f, "tokenizer");
    m.vocab_size = static_cast<int>(h5::get_int(f, "vocab_size"));
    m.vocab_hash = std::stoull(h5::get_string(f, "vocab_hash"));
    m.eot_token = static_cast<int>(h5::get_int(f, "eot_token"));
    m.K = static_cast<std::size_t>(h5::get_int(f, "K"));
    m.dims = static_cast<std::size_t>(h5::get_int(f, "dims"));
    m.temperature = h5::get_double(f, "temperature");
    m.seed = std::stoull(h5::get_string(f, "seed"));
    m.sample_docs = h5::get_int(f, "sample_docs");
    m.sample_bytes = h5::get_int(f, "sample_bytes");
    m.idf = h5::read_array<double>(f, "idf");
    m.basis = h5::read_array<double>(f, "basis");
    m.centres = h5::read_array<double>(f, "centres");
    m.sizes = h5::read_array<std::int64_t>(f, "sizes");
    const std::size_t V = static_cast<std::size_t>(std::max(m.vocab_size, 0));
    if (m.K == 0 || m.dims == 0 || m.idf.size() != V || m.basis.size() != V * m.dims ||
        m.centres.size() != m.K * m.dims || m.sizes.size() != m.K)
      throw InputError("its datasets do not have the shapes its attributes give" + remedy);
    return m;
  } catch (const InputError& e) {
    throw InputError(what + e.what());
  } catch (const std::exception& e) {
    throw InputError(what + "unreadable clusters file (" + e.what() + ")" + remedy);
  }
}

void check_cluster_tokenizer(const ClusterModel& model, const fs::path& file,
                             const std::string& tokenizer, int vocab_size,
                             std::uint64_t vocab_hash) {
  if (model.tokenizer != tokenizer || model.vocab_size != vocab_size ||
      (vocab_hash != 0 && model.vocab_hash != vocab_hash))
    throw InputError(
        file.string() + ": fitted on the ids of tokenizer " + model.tokenizer + " (" +
        std::to_string(model.vocab_size) + " ids), but this corpus is tokenized with " + tokenizer +
        " (" + std::to_string(vocab_size) + " ids" +
        (model.tokenizer == tokenizer && model.vocab_size == vocab_size ? ", another id table"
                                                                        : "") +
        "): fit the clusters with the same --tokenizer (and --bpe-dir)");
}

}  // namespace btm

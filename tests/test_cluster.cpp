// c-BTM's clustering (method/cluster.hpp, data/clustering.hpp): the pieces of the fit against
// their definitions, the routing's incremental prefix embedding against the embedding from
// scratch, clusters.h5 and its refusals, and btm cluster -> prepare --clusters -> run -> eval.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "btm/data/corpus.hpp"
#include "btm/io/eval_file.hpp"
#include "btm/io/h5.hpp"
#include "btm/method/cluster.hpp"
#include "btm/util/error.hpp"
#include "btm/util/rng.hpp"
#include "test_util.hpp"

namespace btm {
namespace {

namespace fs = std::filesystem;

MpiComm& self() {
  static MpiComm comm(MPI_COMM_SELF, false);
  return comm;
}

// A document of `length` letters of the alphabet of `label` (6 letters a label), with spaces.
std::string document(Rng& rng, int label, std::size_t length) {
  std::string text;
  for (std::size_t i = 0; i < length; ++i)
    text += rng.next_u64() % 5 == 0 ? ' ' : static_cast<char>('a' + 6 * label + rng.next_u64() % 6);
  return text;
}

// An unlabelled corpus of `labels` kinds of text, `per_label` .txt files each, in folders named
// after the labels (which btm cluster does not read as domains).
void write_corpus_text(const fs::path& dir, int labels, int per_label, std::uint64_t seed) {
  Rng rng(seed);
  for (int l = 0; l < labels; ++l) {
    fs::create_directories(dir / ("label" + std::to_string(l)));
    for (int i = 0; i < per_label; ++i)
      std::ofstream(dir / ("label" + std::to_string(l)) / ("doc" + std::to_string(i) + ".txt"))
          << document(rng, l, 200 + rng.next_u64() % 200);
  }
}

std::string slurp(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Rows of random term counts over `cols` ids.
std::vector<TermCounts> random_rows(std::size_t n, std::size_t cols, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<TermCounts> rows(n);
  for (TermCounts& r : rows)
    for (std::uint32_t v = 0; v < cols; ++v)
      if (rng.next_u64() % 3 == 0) {
        r.ids.push_back(v);
        r.counts.push_back(1.0 + static_cast<double>(rng.next_u64() % 4));
      }
  return rows;
}

TEST(Cluster, TermCountsAreSortedUniqueAndSkipEndOfText) {
  const std::vector<std::uint16_t> tokens = {5, 3, 5, 256, 3, 5, 9};
  const TermCounts tc = term_counts(tokens, 256);
  EXPECT_EQ(tc.ids, (std::vector<std::uint32_t>{3, 5, 9}));
  EXPECT_EQ(tc.counts, (std::vector<double>{2, 3, 1}));
}

TEST(Cluster, IdfIsTheSmoothInverseDocumentFrequency) {
  const std::size_t V = 12;
  const std::vector<TermCounts> rows = random_rows(20, V, 3);
  ClusterFitOptions o;
  o.clusters = 2;
  const ClusterModel m =
      fit_clusters(rows, static_cast<int>(V), static_cast<int>(V), o, self(), nullptr);
  ASSERT_EQ(m.idf.size(), V);
  for (std::size_t v = 0; v < V; ++v) {
    double df = 0;
    for (const TermCounts& r : rows)
      for (std::uint32_t id : r.ids) df += id == v;
    EXPECT_NEAR(m.idf[v], std::log((1.0 + 20) / (1.0 + df)) + 1.0, 1e-12) << v;
  }
  EXPECT_EQ(m.sample_docs, 20);
  EXPECT_EQ(m.dims, V);  // fewer ids than 100 dimensions: all of them
}

// A matrix of rank 3: the SVD's 3 vectors are orthonormal, span every row (the rows are
// rebuilt from their projections) and their singular values hold the whole Frobenius norm,
// largest first.
TEST(Cluster, RandomizedSvdRecoversALowRankMatrix) {
  const std::size_t n = 50, cols = 40, rank = 3;
  Rng rng(11);
  std::vector<double> U(n * rank), W(rank * cols);
  for (double& x : U) x = rng.normal();
  for (double& x : W) x = rng.normal();
  const double scale[rank] = {10, 4, 1};
  std::vector<TermCounts> rows(n);
  double frobenius = 0;
  for (std::size_t i = 0; i < n; ++i)
    for (std::uint32_t v = 0; v < cols; ++v) {
      double a = 0;
      for (std::size_t k = 0; k < rank; ++k) a += scale[k] * U[i * rank + k] * W[k * cols + v];
      rows[i].ids.push_back(v);
      rows[i].counts.push_back(a);
      frobenius += a * a;
    }
  ClusterFitOptions o;
  o.dims = rank;
  const Svd svd = randomized_svd(rows, cols, o, self());
  ASSERT_EQ(svd.values.size(), rank);
  for (std::size_t a = 0; a < rank; ++a)
    for (std::size_t b = 0; b < rank; ++b) {
      double dot = 0;
      for (std::size_t v = 0; v < cols; ++v)
        dot += svd.right[v * rank + a] * svd.right[v * rank + b];
      EXPECT_NEAR(dot, a == b ? 1.0 : 0.0, 1e-9);
    }
  double residual = 0, squares = 0;
  for (const TermCounts& r : rows) {
    double proj[rank] = {0, 0, 0};
    for (std::size_t z = 0; z < cols; ++z)
      for (std::size_t k = 0; k < rank; ++k) proj[k] += r.counts[z] * svd.right[z * rank + k];
    for (std::size_t z = 0; z < cols; ++z) {
      double back = 0;
      for (std::size_t k = 0; k < rank; ++k) back += proj[k] * svd.right[z * rank + k];
      residual += (back - r.counts[z]) * (back - r.counts[z]);
    }
  }
  for (double s : svd.values) squares += s * s;
  EXPECT_LT(residual, 1e-16 * frobenius);
  EXPECT_NEAR(squares, frobenius, 1e-9 * frobenius);
  EXPECT_GT(svd.values[0], svd.values[1]);
  EXPECT_GT(svd.values[1], svd.values[2]);
}

TEST(Cluster, BalancedAssignmentGivesEveryClusterFloorOrCeil) {
  // Every point is nearest to cluster 0: the balancing spreads them 4 / 3 / 3.
  const std::size_t n = 10, K = 3;
  std::vector<double> d(n * K);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t c = 0; c < K; ++c) d[i * K + c] = static_cast<double>(c) + 0.01 * i;
  const std::vector<std::uint32_t> a = balanced_assignment(d, n, K);
  std::vector<int> sizes(K, 0);
  for (std::uint32_t c : a) ++sizes[c];
  std::sort(sizes.begin(), sizes.end());
  EXPECT_EQ(sizes, (std::vector<int>{3, 3, 4}));
  // The nearest points win the contested cluster.
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(a[i], 0u) << i;
  // Where the nearest assignment is already balanced it is the result.
  std::vector<double> e(6 * 2);
  for (std::size_t i = 0; i < 6; ++i)
    for (std::size_t c = 0; c < 2; ++c) e[i * 2 + c] = (i % 2 == c) ? 0.1 : 1.0;
  const std::vector<std::uint32_t> b = balanced_assignment(e, 6, 2);
  for (std::size_t i = 0; i < 6; ++i) EXPECT_EQ(b[i], i % 2);
  EXPECT_THROW(balanced_assignment(d, 2, 3), InputError);
}

TEST(Cluster, BalancedKMeansFindsSeparatedGroupsAndBalancesAnUnevenOne) {
  // Three groups of unit vectors around three axes, 12 each: each group is one cluster.
  const std::size_t dims = 3, per = 12, K = 3;
  Rng rng(5);
  std::vector<double> points;
  for (std::size_t g = 0; g < K; ++g)
    for (std::size_t i = 0; i < per; ++i) {
      double p[dims];
      for (std::size_t k = 0; k < dims; ++k) p[k] = (k == g ? 1.0 : 0.0) + 0.1 * rng.normal();
      const double norm = std::sqrt(p[0] * p[0] + p[1] * p[1] + p[2] * p[2]);
      for (double x : p) points.push_back(x / norm);
    }
  ClusterFitOptions o;
  const KMeans km = balanced_kmeans(points, dims, K, o, self());
  EXPECT_EQ(km.sizes, (std::vector<std::int64_t>(K, per)));
  ClusterModel m;
  m.K = K;
  m.dims = dims;
  m.centres = km.centres;
  for (std::size_t g = 0; g < K; ++g) {
    const std::size_t c = m.nearest(std::span<const double>(points.data() + g * per * dims, dims));
    for (std::size_t i = 0; i < per; ++i)
      EXPECT_EQ(m.nearest(std::span<const double>(points.data() + (g * per + i) * dims, dims)), c);
  }
  // Two clusters on points of one group and a few others: the balancing still halves them.
  std::vector<double> uneven(points.begin(), points.begin() + (per + 4) * dims);
  const KMeans halves = balanced_kmeans(uneven, dims, 2, o, self());
  EXPECT_EQ(halves.sizes, (std::vector<std::int64_t>{8, 8}));
  EXPECT_THROW(balanced_kmeans(uneven, dims, per + 5, o, self()), InputError);
}

// A clustering of the synthetic text, fitted in the test.
ClusterModel fitted_model(std::size_t K) {
  Rng rng(17);
  std::vector<TermCounts> docs;
  for (int i = 0; i < 60; ++i) {
    const std::string text = document(rng, i % 3, 150);
    std::vector<std::uint16_t> tokens(text.begin(), text.end());
    docs.push_back(term_counts(tokens, 256));
  }
  ClusterFitOptions o;
  o.clusters = K;
  ClusterModel m = fit_clusters(docs, 257, 256, o, self(), nullptr);
  m.tokenizer = "byte";
  return m;
}

TEST(Cluster, IncrementalRoutingEqualsTheEmbeddingFromScratch) {
  const ClusterModel m = fitted_model(3);
  Rng rng(23);
  const std::string text = document(rng, 0, 20) + document(rng, 2, 20);
  std::vector<std::uint16_t> tokens(text.begin(), text.end());
  tokens.insert(tokens.begin() + 7, 256);  // end-of-text is not a term
  const std::vector<std::size_t> experts = {2, 0};
  const double T = 0.1;
  const PrefixRouter router(m, experts, T);
  PrefixRouter r = router;
  std::vector<double> w(experts.size());
  for (std::size_t t = 0; t <= tokens.size(); ++t) {
    if (t > 0) r.add(tokens[t - 1]);
    r.weights(w);
    const std::vector<double> h =
        m.embed(std::span<const std::uint16_t>(tokens.data(), t));  // from scratch
    std::vector<double> logits;
    double most = -1e300, sum = 0;
    for (std::size_t c : experts) {
      double d2 = 0;
      for (std::size_t k = 0; k < m.dims; ++k)
        d2 += (h[k] - m.centres[c * m.dims + k]) * (h[k] - m.centres[c * m.dims + k]);
      logits.push_back(-d2 / T);
      most = std::max(most, logits.back());
    }
    for (double& l : logits) sum += (l = std::exp(l - most));
    for (std::size_t j = 0; j < experts.size(); ++j)
      EXPECT_NEAR(w[j], logits[j] / sum, 1e-9) << "prefix length " << t << ", expert " << j;
  }
  // route_blocks: row b * T + t is the prefix of tokens 0..t of block b.
  const int L = 8;
  const std::vector<double> routes = route_blocks(router, tokens.data(), 2, L);
  ASSERT_EQ(routes.size(), 2 * L * experts.size());
  PrefixRouter fresh = router;
  for (int t = 0; t <= 3; ++t) fresh.add(tokens[L + t]);
  fresh.weights(w);
  for (std::size_t j = 0; j < experts.size(); ++j)
    EXPECT_NEAR(routes[(L + 3) * experts.size() + j], w[j], 1e-12);
  // A prefix of one label's text is routed to that label's cluster.
  const std::string label2 = document(rng, 2, 60);
  const std::vector<std::uint16_t> ids(label2.begin(), label2.end());
  std::vector<double> all(m.K);
  PrefixRouter every(m, {0, 1, 2}, T);
  for (std::uint16_t id : ids) every.add(id);
  every.weights(all);
  EXPECT_EQ(std::max_element(all.begin(), all.end()) - all.begin(),
            static_cast<std::ptrdiff_t>(m.nearest(m.embed(ids))));
  EXPECT_GT(*std::max_element(all.begin(), all.end()), 0.9);
}

TEST(Cluster, FileRoundTripAndItsRefusals) {
  test::TempDir dir("btm-cluster");
  const ClusterModel m = fitted_model(3);
  const fs::path file = dir / "clusters.h5";
  write_clusters(file, m);
  const ClusterModel back = read_clusters(file);
  EXPECT_EQ(back.idf, m.idf);
  EXPECT_EQ(back.basis, m.basis);
  EXPECT_EQ(back.centres, m.centres);
  EXPECT_EQ(back.sizes, m.sizes);
  EXPECT_EQ(back.K, m.K);
  EXPECT_EQ(back.tokenizer, "byte");
  EXPECT_NO_THROW(check_cluster_tokenizer(back, file, "byte", 257, m.vocab_hash));
  try {
    check_cluster_tokenizer(back, file, "gpt2", 50257, 0);
    ADD_FAILURE() << "another tokenizer was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("fit the clusters with the same --tokenizer"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(check_cluster_tokenizer(back, file, "byte", 257, m.vocab_hash + 1), InputError);
  // Truncated: the first half of the file.
  const std::string bytes = slurp(file);
  std::ofstream(dir / "half.h5", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  try {
    read_clusters(dir / "half.h5");
    ADD_FAILURE() << "a truncated file was read";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find((dir / "half.h5").string()), std::string::npos);
  }
  EXPECT_THROW(read_clusters(dir / "missing.h5"), InputError);
}

TEST(Cluster, CommandRefusesBadInputAndKeepsTheEarlierFile) {
  test::TempDir dir("btm-cluster");
  fs::create_directories(dir / "empty" / "sub");
  std::ofstream(dir / "empty" / "notes.md") << "not a document";
  auto r = test::run_btm("cluster --tokenizer byte --input " + (dir / "empty").string() +
                         " --out " + (dir / "c.h5").string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("the corpus is empty"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "c.h5"));

  write_corpus_text(dir / "text", 2, 5, 1);
  r = test::run_btm("cluster --tokenizer byte --clusters 2 --input " + (dir / "text").string() +
                    " --out " + (dir / "c.h5").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string good = slurp(dir / "c.h5");
  r = test::run_btm("cluster --tokenizer byte --clusters 11 --input " + (dir / "text").string() +
                    " --out " + (dir / "c.h5").string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--clusters 11 is more than the 10 documents"), std::string::npos)
      << r.output;
  EXPECT_EQ(slurp(dir / "c.h5"), good);
  for (const auto& e : fs::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();

  // prepare --clusters: a clusters file of another tokenizer, a truncated one.
  if (fs::exists(fs::path(test::source_dir()) / "data" / "gpt2" / "encoder.json")) {
    r = test::run_btm("prepare --tokenizer gpt2 --clusters " + (dir / "c.h5").string() +
                      " --input " + (dir / "text").string() + " --out " +
                      (dir / "corpus").string());
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("fitted on the ids of tokenizer byte"), std::string::npos) << r.output;
  }
  std::ofstream(dir / "cut.h5", std::ios::binary) << good.substr(0, good.size() / 3);
  r = test::run_btm("prepare --tokenizer byte --clusters " + (dir / "cut.h5").string() +
                    " --input " + (dir / "text").string() + " --out " + (dir / "corpus").string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find((dir / "cut.h5").string()), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "corpus" / "cluster_00.h5"));
}

// The whole c-BTM pipeline on CPU: three kinds of text read as one unlabelled corpus are
// clustered, prepared one corpus per cluster, trained one ELM per cluster, and evaluated with
// the cluster routing beside the posterior ensemble.
TEST(Cluster, ClusterPrepareRunEvalEndToEnd) {
  test::TempDir dir("btm-cluster");
  write_corpus_text(dir / "text", 3, 40, 2);
  const std::string clusters = (dir / "clusters.h5").string();
  auto r = test::run_btm("cluster --tokenizer byte --clusters 3 --sample-mb 0 --input " +
                         (dir / "text").string() + " --out " + clusters);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = test::run_btm(
      "prepare --tokenizer byte --valid-fraction 0.1 --test-fraction 0.1 --clusters " + clusters +
      " --input " + (dir / "text").string() + " --out " + (dir / "corpus").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // Each cluster holds one kind of text: its corpus's source names one folder.
  std::set<std::string> seen;
  for (int c = 0; c < 3; ++c) {
    const CorpusInfo info =
        read_corpus_info(dir / "corpus" / ("cluster_0" + std::to_string(c) + ".h5"));
    EXPECT_EQ(info.docs[0] + info.docs[1] + info.docs[2], 40) << info.source;
    const std::size_t at = info.source.find("folders: label");
    ASSERT_NE(at, std::string::npos) << info.source;
    EXPECT_EQ(info.source.find(" label", at + 9), std::string::npos) << "mixed: " << info.source;
    seen.insert(info.source.substr(at + 9, 6));
  }
  EXPECT_EQ(seen.size(), 3u);

  const fs::path run = dir / "run";
  r = test::run_btm("run --data.corpus " + (dir / "corpus").string() +
                    " --data.domains cluster_00,cluster_01,cluster_02 --data.clusters " + clusters +
                    " --model.n_layer 1 --model.d_model 16 --model.n_head 2 --model.context 16 "
                    "--model.vocab_size 257 --model.vocab_multiple 8 --run.steps 6 --run.threads 1 "
                    "--run.device cpu --eval.blocks 4 --eval.prior_blocks 2 --run.dir " +
                    run.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("[eval] cluster routing:"), std::string::npos) << r.output;
  {
    h5::Handle f = h5::open_file(run / "forest.h5", false);
    EXPECT_EQ(h5::get_string(f, "domains_are"), "clusters");
    EXPECT_EQ(h5::get_string(f, "clusters"), clusters);
  }
  const EvalResults e = read_eval_file(run / "eval.h5");
  const std::size_t D = e.domains.size();
  for (const char* row : {"ensemble:top-1", "ensemble:cluster-top-1", "ensemble:cluster-top-2",
                          "ensemble:cluster-top-3"}) {
    const auto at = std::find(e.methods.begin(), e.methods.end(), row);
    ASSERT_NE(at, e.methods.end()) << row;
    const std::size_t m = static_cast<std::size_t>(at - e.methods.begin());
    for (std::size_t d = 0; d < D; ++d) {
      EXPECT_TRUE(std::isfinite(e.perplexity[m * D + d])) << row << " " << e.domains[d];
      EXPECT_GT(e.perplexity[m * D + d], 1.0) << row;
    }
  }
  EXPECT_GT(e.route_seconds, 0.0);
  // Generation routes by the same clusters (eval/generate's test checks the tokens).
  r = test::run_btm("generate --run.dir " + run.string() +
                    " --run.threads 1 --ensemble --route clusters --experts 1 --max-tokens 4 "
                    "--prompt abcabc");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("routed by the clusters"), std::string::npos) << r.output;
  r = test::run_btm("generate --run.dir " + run.string() +
                    " --run.threads 1 --ensemble --route clusters --prior cluster_00 --prompt ab");
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

}  // namespace
}  // namespace btm

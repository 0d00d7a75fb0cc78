// c-BTM's fit over 4 ranks (method/cluster.hpp): the sample's rows spread over the ranks give
// the clustering of the same rows on one rank (the sums only in another order): the same idf,
// cluster sizes and assignment of every document.
#include <gtest/gtest.h>

#include <cmath>

#include "btm/method/cluster.hpp"
#include "btm/util/rng.hpp"
#include "mpi_test_util.hpp"

using namespace btm;

namespace {

// Documents of three disjoint vocabularies (ids 0-29, 30-59, 60-89), 30 of each, in order.
std::vector<TermCounts> documents() {
  Rng rng(3);
  std::vector<TermCounts> docs;
  for (int i = 0; i < 90; ++i) {
    std::vector<std::uint16_t> tokens;
    for (int t = 0; t < 40; ++t)
      tokens.push_back(static_cast<std::uint16_t>(30 * (i % 3) + rng.next_u64() % 30));
    docs.push_back(term_counts(tokens, 99));
  }
  return docs;
}

}  // namespace

TEST(ClusterFit, RanksHoldingPartsOfTheSampleFitTheOneRankClustering) {
  MpiComm& world = test::world();
  const std::vector<TermCounts> all = documents();
  // Rank r holds a contiguous part, so the global order of the rows is the one-rank order.
  const std::size_t n = all.size(), r = static_cast<std::size_t>(world.rank());
  const std::size_t size = static_cast<std::size_t>(world.size());
  const std::vector<TermCounts> mine(all.begin() + static_cast<std::ptrdiff_t>(r * n / size),
                                     all.begin() + static_cast<std::ptrdiff_t>((r + 1) * n / size));
  ClusterFitOptions o;
  o.clusters = 3;
  MpiComm self(MPI_COMM_SELF, false);
  const ClusterModel one = fit_clusters(all, 100, 99, o, self, nullptr);
  const ClusterModel spread = fit_clusters(mine, 100, 99, o, world, nullptr);
  EXPECT_EQ(spread.sample_docs, static_cast<std::int64_t>(n));
  EXPECT_EQ(spread.sizes, one.sizes);
  EXPECT_EQ(spread.sizes, (std::vector<std::int64_t>{30, 30, 30}));
  ASSERT_EQ(spread.idf, one.idf);  // integer document counts: exact
  // Every document is assigned the same way.
  for (const TermCounts& d : all) {
    std::vector<std::uint16_t> tokens;
    for (std::size_t z = 0; z < d.ids.size(); ++z)
      tokens.insert(tokens.end(), static_cast<std::size_t>(d.counts[z]),
                    static_cast<std::uint16_t>(d.ids[z]));
    EXPECT_EQ(spread.nearest(spread.embed(tokens)), one.nearest(one.embed(tokens)));
  }
}

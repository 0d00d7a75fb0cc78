// Exact fixed-point sums (btm/fixed_point.hpp) and parameter averages of checkpoints
// (btm/average.hpp): hand-computed values, order independence, range and input errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "btm/io/checkpoint.hpp"
#include "btm/method/average.hpp"
#include "btm/model/params.hpp"
#include "btm/util/error.hpp"
#include "btm/util/fixed_point.hpp"
#include "test_util.hpp"

namespace btm {
namespace {

namespace fs = std::filesystem;

std::vector<float> random_floats(std::size_t n, unsigned seed, float scale = 0.1f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> out(n);
  for (float& x : out) x = dist(gen);
  return out;
}

bool same_bytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(FixedPoint, HandComputedTermsAndSums) {
  // 0.5, -0.25 and 3 are exact on the 2^-40 grid; 1e-13 is below half its resolution.
  EXPECT_EQ(fixed::to_fixed(0.5f, 1.0), std::int64_t{1} << 39);
  EXPECT_EQ(fixed::to_fixed(-0.25f, 1.0), -(std::int64_t{1} << 38));
  EXPECT_EQ(fixed::to_fixed(1.5f, 2.0), 3 * (std::int64_t{1} << 40));
  EXPECT_EQ(fixed::to_fixed(1e-13f, 1.0), 0);
  fixed::Sum sum(3);
  sum.add(std::vector<float>{0.5f, 1.0f, -2.0f}, 0.25);
  sum.add(std::vector<float>{0.5f, 3.0f, 2.0f}, 0.75);
  EXPECT_EQ(sum.result(), (std::vector<float>{0.5f, 2.5f, 1.0f}));
  EXPECT_EQ(sum.result(2.0), (std::vector<float>{0.25f, 1.25f, 0.5f}));
  EXPECT_EQ(sum.bad(), 0);
}

TEST(FixedPoint, SumsHaveTheSameBitsInAnyOrderAndSplit) {
  const std::size_t n = 20'000;
  std::vector<std::vector<float>> terms;
  for (unsigned k = 0; k < 5; ++k) terms.push_back(random_floats(n, 10 + k, 0.3f * (k + 1)));
  const std::vector<double> w = {0.1, 0.2, 0.3, 0.15, 0.25};
  fixed::Sum forward(n), backward(n), a(n), b(n);
  for (std::size_t k = 0; k < 5; ++k) forward.add(terms[k], w[k]);
  for (std::size_t k = 5; k-- > 0;) backward.add(terms[k], w[k]);
  // Two partial sums added up as integers, as a reduction over ranks adds them.
  for (std::size_t k : {0, 3}) a.add(terms[k], w[k]);
  for (std::size_t k : {4, 1, 2}) b.add(terms[k], w[k]);
  for (std::size_t i = 0; i < n; ++i) a.raw()[i] += b.raw()[i];
  EXPECT_TRUE(same_bytes(forward.result(), backward.result()));
  EXPECT_TRUE(same_bytes(forward.result(), a.result()));
  // Within fp32 rounding of the double sum.
  const std::vector<float> got = forward.result();
  for (std::size_t i = 0; i < n; ++i) {
    double want = 0, scale = 0;
    for (std::size_t k = 0; k < 5; ++k) {
      want += w[k] * terms[k][i];
      scale += std::abs(w[k] * terms[k][i]);
    }
    ASSERT_NEAR(got[i], want, 6e-8 * std::abs(want) + 1e-11 * (1 + scale)) << i;
  }
}

TEST(FixedPoint, RejectsNonFiniteAndOutOfRangeTerms) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  fixed::Sum sum(4, fixed::term_limit(4));  // |term| <= 2^21
  sum.add(std::vector<float>{1.0f, inf, nan, 3e6f});
  EXPECT_EQ(sum.bad(), 3);
  EXPECT_EQ(sum.result()[0], 1.0f);
  EXPECT_EQ(sum.raw()[1], 0);  // rejected terms are not added
  EXPECT_DOUBLE_EQ(fixed::term_limit(1), 8388608.0);
  EXPECT_DOUBLE_EQ(fixed::term_limit(8), 1048576.0);
}

// Checkpoints of a small model whose state vectors are `seed`-dependent random values.
Checkpoint small_checkpoint(const std::string& name, unsigned seed, std::uint64_t tokens) {
  Checkpoint c;
  c.name = name;
  c.model = btm::test::small_model();
  const std::size_t n = ParamLayout(c.model).total();
  c.params = random_floats(n, seed);
  c.adam_m = random_floats(n, seed + 100, 1e-3f);
  c.adam_v = random_floats(n, seed + 200, 1e-3f);
  for (float& v : c.adam_v) v = v * v;
  c.step = c.target_steps = c.schedule_steps = 10;
  c.batch = {2, 3};
  c.tokens = tokens;
  c.domains = {name};
  return c;
}

TEST(AverageCheckpoints, EqualsTheFixedPointSumStreamedOverParents) {
  test::TempDir dir("btm-average");
  std::vector<Checkpoint> parents;
  std::vector<fs::path> files;
  for (unsigned j = 0; j < 3; ++j) {
    parents.push_back(small_checkpoint("e" + std::to_string(j), 1 + j, 1000 + j));
    files.push_back(dir.path() / ("e" + std::to_string(j) + ".h5"));
    save_checkpoint(files.back(), parents.back());
  }
  const std::vector<double> w = {0.5, 0.2, 0.3};
  const Checkpoint avg = average_checkpoints(files, w, parents[0].model, true);
  const std::size_t n = parents[0].params.size();
  fixed::Sum p(n), m(n), v(n);
  for (std::size_t j = 0; j < 3; ++j) {
    p.add(parents[j].params, w[j]);
    m.add(parents[j].adam_m, w[j]);
    v.add(parents[j].adam_v, w[j]);
  }
  EXPECT_TRUE(same_bytes(avg.params, p.result()));
  EXPECT_TRUE(same_bytes(avg.adam_m, m.result()));
  EXPECT_TRUE(same_bytes(avg.adam_v, v.result()));
  EXPECT_EQ(avg.tokens, 1001u);  // 0.5 * 1000 + 0.2 * 1001 + 0.3 * 1002 = 1000.8, rounded
  EXPECT_EQ(avg.domains, (std::vector<std::string>{"e0", "e1", "e2"}));
  // Another order of the parents, the same bits; a parameters-only average has zero moments.
  const Checkpoint reordered = average_checkpoints(
      {files[2], files[0], files[1]}, std::vector<double>{0.3, 0.5, 0.2}, parents[0].model, false);
  EXPECT_TRUE(same_bytes(reordered.params, avg.params));
  EXPECT_TRUE(same_bytes(reordered.adam_m, std::vector<float>(n, 0.0f)));
}

TEST(AverageCheckpoints, RefusesBadWeightsAndShapes) {
  test::TempDir dir("btm-average");
  const Checkpoint a = small_checkpoint("a", 1, 10);
  Checkpoint other = small_checkpoint("b", 2, 10);
  other.model.d_model = 16;
  other.params = other.adam_m = other.adam_v =
      std::vector<float>(ParamLayout(other.model).total(), 0.0f);
  save_checkpoint(dir.path() / "a.h5", a);
  save_checkpoint(dir.path() / "b.h5", other);
  const std::vector<fs::path> two = {dir.path() / "a.h5", dir.path() / "a.h5"};
  try {
    average_checkpoints(two, std::vector<double>{0.5, 0.6}, a.model, false);
    FAIL() << "weights summing to 1.1 accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("1.1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(average_checkpoints(two, std::vector<double>{1.5, -0.5}, a.model, false),
               InputError);
  EXPECT_THROW(average_checkpoints(two, std::vector<double>{1.0}, a.model, false), InputError);
  EXPECT_THROW(average_checkpoints({}, std::vector<double>{}, a.model, false), InputError);
  try {
    average_checkpoints({dir.path() / "a.h5", dir.path() / "b.h5"}, std::vector<double>{0.5, 0.5},
                        a.model, false);
    FAIL() << "a parent of another shape accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("b.h5"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace btm

// The batch sampler: a seeded bijection per epoch, domain balance, determinism, and rank
// slicing that does not depend on the rank count.
#include <gtest/gtest.h>

#include <set>

#include "btm/data/sampler.hpp"
#include "btm/util/error.hpp"

using namespace btm;

TEST(Sampler, PermutationIsABijectionForManySizes) {
  for (std::uint64_t n : {1ull, 2ull, 3ull, 7ull, 64ull, 1000ull, 4097ull}) {
    const Permutation p(n, 42 + n);
    std::set<std::uint64_t> seen;
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint64_t x = p(i);
      ASSERT_LT(x, n);
      seen.insert(x);
    }
    EXPECT_EQ(seen.size(), n);
  }
  // Another seed, another order.
  const Permutation a(1000, 1), b(1000, 2);
  int same = 0;
  for (std::uint64_t i = 0; i < 1000; ++i) same += a(i) == b(i);
  EXPECT_LT(same, 20);
}

TEST(Sampler, EpochVisitsEveryWindowOnceAndDomainsAreBalanced) {
  std::vector<std::uint16_t> a(8 * 10 + 1), b(8 * 5 + 1);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<std::uint16_t>(i);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::uint16_t>(1000 + i);
  const TokenArray ta = TokenArray::owned(a), tb = TokenArray::owned(b);
  const BatchSampler sampler({&ta, &tb}, {"a", "b"}, 8, 7);
  std::set<int> starts_a;
  std::vector<std::int32_t> in(8), tgt(8);
  for (std::uint64_t i = 0; i < 20; ++i) {
    sampler.sample(i, in.data(), tgt.data());
    EXPECT_EQ(in[0] >= 1000, i % 2 == 1) << "sample " << i;    // alternating domains
    for (int t = 0; t < 8; ++t) EXPECT_EQ(tgt[t], in[t] + 1);  // targets are shifted inputs
    if (i % 2 == 0) starts_a.insert(in[0]);
  }
  EXPECT_EQ(starts_a.size(), 10u);  // 10 windows of domain a, each exactly once
  for (int s : starts_a) EXPECT_EQ(s % 8, 0);
}

TEST(Sampler, RankSlicesReassembleTheSameGlobalBatch) {
  std::vector<std::uint16_t> a(5000);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<std::uint16_t>(i % 251);
  const TokenArray ta = TokenArray::owned(a);
  const BatchSampler s({&ta}, {"a"}, 16, 3);
  const int global = 12;
  std::vector<std::int32_t> whole(global * 16), whole_t(global * 16);
  s.fill(100, global, whole.data(), whole_t.data());
  for (int ranks : {1, 2, 3, 4}) {
    const int per_rank = global / ranks;
    std::vector<std::int32_t> joined;
    for (int r = 0; r < ranks; ++r) {
      std::vector<std::int32_t> in(per_rank * 16), tgt(per_rank * 16);
      s.fill(100 + static_cast<std::uint64_t>(r * per_rank), per_rank, in.data(), tgt.data());
      joined.insert(joined.end(), in.begin(), in.end());
    }
    EXPECT_EQ(joined, whole) << ranks << " ranks";
  }
}

TEST(Sampler, TooShortDomainIsRefusedByName) {
  std::vector<std::uint16_t> a(10);
  const TokenArray ta = TokenArray::owned(a);
  try {
    BatchSampler s({&ta}, {"tiny_domain"}, 16, 3);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("tiny_domain"), std::string::npos);
  }
}

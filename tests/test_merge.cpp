// Merges of task vectors (btm/method/merge.hpp): TIES, DARE and task arithmetic on tiny vectors
// worked out by hand, against a plain double-precision reference, and their invariants.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "btm/app/cli.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/method/merge.hpp"
#include "btm/model/params.hpp"
#include "btm/util/error.hpp"
#include "btm/util/rng.hpp"
#include "test_util.hpp"

namespace btm {
namespace {

MergeOptions options(MergeMethod method, double lambda = 1.0, double density = 1.0,
                     double drop = 0.0, std::uint64_t seed = 1) {
  return {method, lambda, density, drop, seed};
}

// seed + tau_j for each j.
std::vector<std::vector<float>> parents_of(const std::vector<float>& seed,
                                           const std::vector<std::vector<float>>& taus) {
  std::vector<std::vector<float>> out;
  for (const std::vector<float>& tau : taus) {
    std::vector<float> theta(seed.size());
    for (std::size_t i = 0; i < seed.size(); ++i) theta[i] = seed[i] + tau[i];
    out.push_back(theta);
  }
  return out;
}

// The merge through TaskVectorMerge, every parent in every pass.
std::vector<float> merge(const MergeOptions& o, const std::vector<double>& weights,
                         const std::vector<float>& seed,
                         const std::vector<std::vector<float>>& parents,
                         std::vector<std::size_t> ends = {}) {
  if (ends.empty()) ends = {seed.size()};
  TaskVectorMerge m(o, {weights}, seed, ends);
  for (int pass = 0; pass < m.passes(); ++pass)
    for (std::size_t j = 0; j < parents.size(); ++j) m.add(pass, j, parents[j]);
  return m.result();
}

std::vector<float> normal(std::size_t n, unsigned seed, float scale) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> out(n);
  for (float& x : out) x = dist(gen);
  return out;
}

TEST(Merge, TrimKeepsTheLargestMagnitudesOfATensor) {
  std::vector<float> x = {0.5f, -3.0f, 1.0f, -2.0f, 0.25f};
  trim_to_density(x, 0.4);  // floor(0.4 x 5) = 2 entries: -3 and -2
  EXPECT_EQ(x, (std::vector<float>{0.0f, -3.0f, 0.0f, -2.0f, 0.0f}));
  // Ties at the threshold go to the lower indices.
  std::vector<float> ties = {1.0f, -1.0f, 1.0f, 0.5f};
  trim_to_density(ties, 0.5);
  EXPECT_EQ(ties, (std::vector<float>{1.0f, -1.0f, 0.0f, 0.0f}));
  // density 1 keeps everything; floor(0.1 x 5) = 0 keeps nothing.
  std::vector<float> all = {0.5f, -3.0f, 1.0f};
  trim_to_density(all, 1.0);
  EXPECT_EQ(all, (std::vector<float>{0.5f, -3.0f, 1.0f}));
  std::vector<float> none = {0.5f, -3.0f, 1.0f, 2.0f, 4.0f};
  trim_to_density(none, 0.1);
  EXPECT_EQ(none, std::vector<float>(5, 0.0f));
  // 0.29 x 100 is 28.999... in binary: still 29 entries kept.
  std::vector<float> hundred(100);
  for (std::size_t i = 0; i < 100; ++i) hundred[i] = static_cast<float>(i + 1);
  trim_to_density(hundred, 0.29);
  EXPECT_EQ(std::count(hundred.begin(), hundred.end(), 0.0f), 71);
  EXPECT_EQ(hundred[71], 72.0f);
  EXPECT_EQ(hundred[70], 0.0f);
}

TEST(Merge, TaskArithmeticByHand) {
  // theta = seed + lambda (w1 tau1 + w2 tau2), every number exact in binary.
  const std::vector<float> seed = {1.0f, 2.0f};
  const auto parents = parents_of(seed, {{0.5f, -1.0f}, {-0.25f, 3.0f}});
  // 0.25 x (0.5, -1) + 0.75 x (-0.25, 3) = (-0.0625, 2); x 0.5 = (-0.03125, 1)
  EXPECT_EQ(merge(options(MergeMethod::task_arithmetic, 0.5), {0.25, 0.75}, seed, parents),
            (std::vector<float>{0.96875f, 3.0f}));
  // lambda -1 negates the task vector.
  EXPECT_EQ(merge(options(MergeMethod::task_arithmetic, -1.0), {0.25, 0.75}, seed, parents),
            (std::vector<float>{1.0625f, 0.0f}));
}

TEST(Merge, TiesByHand) {
  const std::vector<float> seed = {1.0f, 1.0f, 1.0f, 1.0f};
  const auto parents = parents_of(seed, {{0.5f, -0.25f, 2.0f, 0.0f}, {-1.0f, -0.5f, 1.0f, 0.125f}});
  // density 1, equal weights: sum of w tau = (-0.25, -0.375, 1.5, 0.0625), signs (-, -, +, +).
  // Agreeing entries: 0 only tau2 (-1); 1 both: -0.375; 2 both: 1.5; 3 only tau2 (tau1 is 0).
  EXPECT_EQ(merge(options(MergeMethod::ties), {0.5, 0.5}, seed, parents),
            (std::vector<float>{0.0f, 0.625f, 2.5f, 1.125f}));
  EXPECT_EQ(merge(options(MergeMethod::ties, 2.0), {0.5, 0.5}, seed, parents),
            (std::vector<float>{-1.0f, 0.25f, 4.0f, 1.25f}));
  // density 0.5 (2 of 4): tau1 -> (0.5, 0, 2, 0); tau2 -> (-1, 0, 1, 0) (|-1| = |1|: the lower
  // index first). Sum (-0.25, 0, 1.5, 0): signs (-, +, +, +); entry 1 and 3 have no entry left.
  EXPECT_EQ(merge(options(MergeMethod::ties, 1.0, 0.5), {0.5, 0.5}, seed, parents),
            (std::vector<float>{0.0f, 1.0f, 2.5f, 1.0f}));
  // The weights enter before the election: 0.8 x 0.5 + 0.2 x (-1) > 0 elects + at entry 0, so
  // only tau1 is kept there (a count of signs would be a tie). Disjoint mean over the agreeing
  // weights: entry 0: 0.5; 1: -0.3; 2: 1.8; 3: 0.125.
  const std::vector<float> weighted = merge(options(MergeMethod::ties), {0.8, 0.2}, seed, parents);
  const std::vector<float> expect = {1.5f, 0.7f, 2.8f, 1.125f};
  for (std::size_t i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(weighted[i], expect[i]) << i;
}

TEST(Merge, TiesTrimsEachTensorOnItsOwn) {
  // Two tensors of 2: density 0.5 keeps the larger entry of each, so the small first tensor keeps
  // one entry (a threshold over the whole vector would keep only 3 and 4).
  const std::vector<float> seed = {0.0f, 0.0f, 0.0f, 0.0f};
  const auto parents = parents_of(seed, {{0.015625f, 0.03125f, 3.0f, 4.0f}});
  EXPECT_EQ(merge(options(MergeMethod::ties, 1.0, 0.5), {1.0}, seed, parents, {2, 4}),
            (std::vector<float>{0.0f, 0.03125f, 0.0f, 4.0f}));
  EXPECT_EQ(merge(options(MergeMethod::ties, 1.0, 0.5), {1.0}, seed, parents, {4}),
            (std::vector<float>{0.0f, 0.0f, 3.0f, 4.0f}));
}

// TIES against a plain double-precision reference of its definition: per tensor top-k, the sign
// of the weighted sum, the weighted mean of the agreeing entries.
TEST(Merge, TiesMatchesAReferenceOnRandomVectors) {
  const std::size_t n = 600;
  const std::vector<std::size_t> ends = {100, 350, 600};
  const std::vector<float> seed = normal(n, 1, 0.02f);
  std::vector<std::vector<float>> taus = {normal(n, 2, 1e-3f), normal(n, 3, 2e-3f),
                                          normal(n, 4, 5e-4f)};
  const std::vector<double> w = {0.5, 0.3, 0.2};
  const double density = 0.3, lambda = 1.5;
  const auto parents = parents_of(seed, taus);
  const std::vector<float> got =
      merge(options(MergeMethod::ties, lambda, density), w, seed, parents, ends);
  std::vector<std::vector<double>> trimmed(3, std::vector<double>(n, 0.0));
  for (std::size_t j = 0; j < 3; ++j) {
    std::size_t begin = 0;
    for (std::size_t end : ends) {
      std::vector<std::pair<double, std::size_t>> order;
      for (std::size_t i = begin; i < end; ++i)
        order.push_back({std::abs(static_cast<double>(parents[j][i] - seed[i])), i});
      std::sort(order.rbegin(), order.rend());
      const std::size_t k = static_cast<std::size_t>(density * static_cast<double>(end - begin));
      for (std::size_t r = 0; r < k; ++r) {
        const std::size_t i = order[r].second;
        trimmed[j][i] = static_cast<double>(parents[j][i] - seed[i]);
      }
      begin = end;
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    double elect = 0, num = 0, den = 0;
    for (std::size_t j = 0; j < 3; ++j) elect += w[j] * trimmed[j][i];
    for (std::size_t j = 0; j < 3; ++j)
      if (trimmed[j][i] != 0 && (trimmed[j][i] > 0) == (elect >= 0)) {
        num += w[j] * trimmed[j][i];
        den += w[j];
      }
    const double expect = seed[i] + (den > 0 ? lambda * num / den : 0.0);
    EXPECT_NEAR(got[i], expect, 1e-8) << i;
  }
}

TEST(Merge, LambdaOneOfOneParentIsThatParent) {
  // Values on a 2^-12 grid in [1, 2): every step is exact, so the parent comes back bit for bit.
  std::vector<float> seed(64), theta(64);
  for (std::size_t i = 0; i < 64; ++i) {
    seed[i] = 1.0f + static_cast<float>((i * 37) % 4096) / 4096.0f;
    theta[i] = 1.0f + static_cast<float>((i * 91 + 5) % 4096) / 4096.0f;
  }
  for (MergeMethod method :
       {MergeMethod::task_arithmetic, MergeMethod::ties, MergeMethod::dare, MergeMethod::dare_ties})
    EXPECT_EQ(merge(options(method), {1.0}, seed, {theta}), theta) << word_of(method);
  // A parent with weight 1 among others with weight 0.
  const std::vector<float> other(64, 1.5f);
  EXPECT_EQ(
      merge(options(MergeMethod::task_arithmetic), {0.0, 1.0, 0.0}, seed, {other, theta, other}),
      theta);
  // Realistic values: the parent to float rounding (tau = theta - seed rounds once, the result
  // once more).
  const std::vector<float> s = normal(1000, 7, 0.02f);
  const auto p = parents_of(s, {normal(1000, 8, 1e-3f)});
  const std::vector<float> got = merge(options(MergeMethod::task_arithmetic), {1.0}, s, p);
  for (std::size_t i = 0; i < 1000; ++i) EXPECT_NEAR(got[i], p[0][i], 1e-9) << i;
}

TEST(Merge, TiesWithDensityOneAndAgreeingSignsIsTheWeightedMean) {
  const std::size_t n = 500;
  const std::vector<float> seed = normal(n, 11, 0.02f);
  std::vector<std::vector<float>> taus;
  for (unsigned j = 0; j < 3; ++j) {
    std::vector<float> tau = normal(n, 20 + j, 1e-3f);
    for (std::size_t i = 0; i < n; ++i) tau[i] = (i % 3 == 0 ? -1.0f : 1.0f) * std::abs(tau[i]);
    taus.push_back(tau);
  }
  const auto parents = parents_of(seed, taus);
  const std::vector<double> w = {0.2, 0.3, 0.5};
  const std::vector<float> ties = merge(options(MergeMethod::ties, 0.7), w, seed, parents);
  const std::vector<float> ta = merge(options(MergeMethod::task_arithmetic, 0.7), w, seed, parents);
  for (std::size_t i = 0; i < n; ++i) EXPECT_FLOAT_EQ(ties[i], ta[i]) << i;
  // DARE with p = 0 is task arithmetic, DARE-TIES with p = 0 is TIES with density 1.
  EXPECT_EQ(merge(options(MergeMethod::dare, 0.7), w, seed, parents), ta);
  EXPECT_EQ(merge(options(MergeMethod::dare_ties, 0.7), w, seed, parents), ties);
}

TEST(Merge, DareIsSeededAndKeepsOneMinusPOfTheEntries) {
  const std::size_t n = 100'000;
  const double p = 0.9;
  const std::vector<float> ones(n, 1.0f);
  std::vector<float> a = ones, b = ones, c = ones, other_parent = ones;
  drop_and_rescale(a, p, 42, 0);
  drop_and_rescale(b, p, 42, 0);
  drop_and_rescale(c, p, 43, 0);
  drop_and_rescale(other_parent, p, 42, 1);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, other_parent);
  // Kept entries are x / (1 - p); their share is 1 - p within 5 standard deviations.
  std::size_t kept = 0;
  for (float x : a) {
    if (x != 0.0f) {
      EXPECT_EQ(x, static_cast<float>(1.0 / (1.0 - p)));
      ++kept;
    }
  }
  const double sd = std::sqrt(static_cast<double>(n) * p * (1 - p));
  EXPECT_NEAR(static_cast<double>(kept), (1 - p) * static_cast<double>(n), 5 * sd);
  // Entry i's draw is the i-th of the parent's stream: a part of the vector is dropped as in the
  // whole.
  std::vector<float> part(ones.begin() + 500, ones.begin() + 900);
  drop_and_rescale(part, p, 42, 0, 500);
  EXPECT_TRUE(std::equal(part.begin(), part.end(), a.begin() + 500));
}

TEST(Merge, DareByHand) {
  // p = 0.5: the kept entries x 2. Which are kept: draw i of parent j's stream (merge.hpp), an
  // Rng seeded with mix64(mix64(seed) + j), below p dropped.
  const std::size_t n = 16;
  const std::uint64_t seed = 7;
  const std::vector<float> base(n, 1.0f);
  const std::vector<std::vector<float>> taus = {std::vector<float>(n, 0.25f),
                                                std::vector<float>(n, -0.5f)};
  const std::vector<double> w = {0.5, 0.5};
  const std::vector<float> got =
      merge(options(MergeMethod::dare, 1.0, 1.0, 0.5, seed), w, base, parents_of(base, taus));
  int dropped = 0;
  for (std::size_t i = 0; i < n; ++i) {
    double expect = 1.0;
    for (std::size_t j = 0; j < 2; ++j) {
      Rng draw(mix64(mix64(seed) + j) + i);
      if (draw.uniform() < 0.5)
        ++dropped;
      else
        expect += w[j] * 2.0 * taus[j][i];
    }
    EXPECT_EQ(got[i], static_cast<float>(expect)) << i;
  }
  EXPECT_GT(dropped, 0);
  EXPECT_LT(dropped, 32);
}

// A batch of merges (one read of the parents for all) gives each the bits it has alone.
TEST(Merge, SeveralWeightVectorsAtOnceEqualOneAtATime) {
  const std::size_t n = 300;
  const std::vector<float> seed = normal(n, 31, 0.02f);
  const auto parents =
      parents_of(seed, {normal(n, 32, 1e-3f), normal(n, 33, 1e-3f), normal(n, 34, 1e-3f)});
  const std::vector<std::vector<double>> weights = {
      {0.2, 0.3, 0.5}, {0.0, 1.0, 0.0}, {0.5, 0.0, 0.5}};
  for (MergeMethod method : {MergeMethod::task_arithmetic, MergeMethod::ties, MergeMethod::dare,
                             MergeMethod::dare_ties}) {
    const MergeOptions o = options(method, 1.2, 0.3, 0.6, 9);
    TaskVectorMerge batch(o, weights, seed, {100, n});
    for (int pass = 0; pass < batch.passes(); ++pass)
      for (std::size_t j = 0; j < parents.size(); ++j) batch.add(pass, j, parents[j]);
    for (std::size_t u = 0; u < weights.size(); ++u)
      EXPECT_EQ(batch.result(u), merge(o, weights[u], seed, parents, {100, n}))
          << word_of(method) << " " << u;
  }
}

// Parents held in memory give the merges that streaming them from their files gives, and a
// held parent is read once: with its file gone, it is still there; streamed, the read fails.
TEST(Merge, HeldParentsEqualStreamedOnesAndAreReadOnce) {
  test::TempDir dir("btm-merge");
  const ModelConfig model = test::small_model();
  const std::size_t n = ParamLayout(model).total();
  const std::vector<float> seed = normal(n, 41, 0.02f);
  std::vector<std::filesystem::path> files;
  for (unsigned j = 0; j < 3; ++j) {
    Checkpoint c;
    c.name = "e" + std::to_string(j);
    c.model = model;
    c.params = parents_of(seed, {normal(n, 42 + j, 1e-3f)}).front();
    c.adam_m.assign(n, 0.0f);
    c.adam_v.assign(n, 0.0f);
    files.push_back(dir.path() / (c.name + ".h5"));
    save_checkpoint(files.back(), c);
  }
  const std::vector<std::vector<double>> weights = {{0.2, 0.3, 0.5}, {0.6, 0.2, 0.2}};
  MergeParents held(files, model, true);
  for (MergeMethod method : {MergeMethod::task_arithmetic, MergeMethod::ties}) {
    const MergeOptions o = options(method, 1.0, 0.3);
    MergeParents streamed(files, model, false);
    EXPECT_EQ(merge_params(held, weights, seed, model, o),
              merge_params(streamed, weights, seed, model, o))
        << word_of(method);
  }
  std::filesystem::remove(files[1]);
  EXPECT_EQ(held.get(1).size(), n);
  MergeParents streamed(files, model, false);
  EXPECT_THROW(streamed.get(1), InputError);
}

TEST(Merge, BadOptionsAreInputErrors) {
  const std::vector<float> seed(4, 0.0f);
  const std::vector<double> one = {1.0}, not_a_distribution = {0.5, 0.2};
  const auto make = [&](const MergeOptions& o, const std::vector<double>& w) {
    TaskVectorMerge m(o, {w}, seed, {4});
  };
  EXPECT_THROW(make(options(MergeMethod::ties, 1.0, 0.0), one), InputError);
  EXPECT_THROW(make(options(MergeMethod::dare, 1.0, 1.0, 1.0), one), InputError);
  EXPECT_THROW(make(options(MergeMethod::task_arithmetic, NAN), one), InputError);
  EXPECT_THROW(make(options(MergeMethod::ties), not_a_distribution), InputError);
  EXPECT_NO_THROW(make(options(MergeMethod::ties, 1.0, 0.2), one));
}

// eval.merges is checked with the other settings, before any work: known method words, once
// each, and a shared seed to merge from.
TEST(Merge, EvalMergesSettingsAreChecked) {
  const auto problem = [](std::vector<std::string> args) -> std::string {
    Config c;
    try {
      parse_command("test", "", args, po::options_description(), &c, false);
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(problem({"--eval.merges", "ties,dare-ties,task-arithmetic,dare"}), "");
  EXPECT_NE(problem({"--eval.merges", "ties,mean"}).find("'mean' is not a merge method"),
            std::string::npos);
  EXPECT_NE(problem({"--eval.merges", "average"}).find("the averages are evaluated anyway"),
            std::string::npos);
  EXPECT_NE(problem({"--eval.merges", "ties,ties"}).find("lists 'ties' twice"), std::string::npos);
  EXPECT_NE(problem({"--eval.merges", "ties", "--run.elm_init", "random", "--run.seed_share", "0"})
                .find("run.elm_init = random"),
            std::string::npos);
  EXPECT_NE(problem({"--eval.merge_density", "0"}).find("eval.merge_density"), std::string::npos);
  EXPECT_NE(problem({"--eval.merge_drop", "1"}).find("eval.merge_drop"), std::string::npos);
}

}  // namespace
}  // namespace btm

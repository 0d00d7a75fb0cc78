// fixed_point.cpp: the kernel cases of the exact fixed-point sums (kernels/fixed_point.cu)
// against util/fixed_point.hpp, bit for bit: the sums, the counts of rejected terms and the
// floats, on values spanning 17 decades with every edge the host arithmetic decides.
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "btm/util/fixed_point.hpp"
#include "ops.hpp"

namespace btm::cuda::cases {
namespace {

// Values for the fixed-point kernels: random magnitudes over 17 decades (1e-14 .. 1e3, so
// terms below the resolution 2^-40 round to 0 or +-1) and every edge the host arithmetic
// decides, spread over the vector from `shift` on (at the start, the middle and the end):
// both neighbours of the term limit `limit` (for `weight`) in both signs (never the limit
// itself: a term of exactly 2^23 is 2^63 units, one past int64), exact ties of the rounding to
// 2^-40 (round half to even: 1.5, 2.5, -1.5, -2.5, 0.5 units), NaN, +-Inf, +-0, the largest
// float, the smallest normal and subnormal. `rejected` counts the values outside the limit.
std::vector<float> fixed_point_values(std::size_t n, double limit, double weight,
                                      std::uint64_t seed, std::size_t shift,
                                      std::size_t* rejected = nullptr) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) {
    const double magnitude = std::pow(10.0, -14.0 + 17.0 * rng.uniform());
    x = static_cast<float>(rng.uniform() < 0.5 ? -magnitude : magnitude);
  }
  const float at = static_cast<float>(limit / std::abs(weight));
  const float below = std::nextafter(at, 0.0f), above = std::nextafter(at, INFINITY);
  const float unit = std::ldexp(1.0f, -40);  // one unit of the sum (with weight 1)
  const float specials[] = {below,        -below,       above,       -above,       NAN,
                            INFINITY,     -INFINITY,    0.0f,        -0.0f,        FLT_MAX,
                            -FLT_MAX,     FLT_MIN,      1e-45f,      1.5f * unit,  2.5f * unit,
                            -1.5f * unit, -2.5f * unit, 0.5f * unit, -0.5f * unit, 3.0f * unit};
  const std::size_t count = sizeof(specials) / sizeof(specials[0]);
  // Near the end too: shifts below 8 * count keep the callers' vectors apart there as well.
  const std::size_t end_base = n > 9 * count ? n - 9 * count : 0;
  for (std::size_t k = 0; k < count; ++k)
    for (std::size_t base : {std::size_t{0}, n / 2, end_base}) {
      const std::size_t i = base + shift + k;
      if (i < n) v[i] = specials[k];
    }
  if (rejected != nullptr) {
    *rejected = 0;
    for (float x : v)
      if (!(std::abs(static_cast<double>(x) * weight) < limit)) ++*rejected;
  }
  return v;
}

constexpr std::int64_t kMicroBatches = 3;
constexpr float kSentinel = 42.0f;

// Sums that start non-zero, from `offset` into the array (a layer's range of the flat vector).
std::vector<std::int64_t> starting_sums(std::size_t size) {
  Rng rng(72);
  std::vector<std::int64_t> start(size);
  for (auto& s : start) s = static_cast<std::int64_t>(rng.next_u64() >> 14) - (1ll << 49);
  return start;
}

// fixed_accumulate of two micro-batch gradients (two launches) into sums that start non-zero
// and a count of 7: fixed::accumulate's sums and count, each gradient's range zeroed (+0) and
// nothing outside the range touched (the sums before it, the sentinels before the gradients).
class FixedAccumulate final : public Run {
 public:
  FixedAccumulate(std::size_t n, std::size_t offset) : n_(n), offset_(offset) {
    limit_ = fixed::term_limit(kMicroBatches);
    g1_ = fixed_point_values(n, limit_, 1.0, 70 + n, 0, &bad1_);
    g2_ = fixed_point_values(n, limit_, 1.0, 71 + n, 1, &bad2_);
    start_ = starting_sums(offset + n);
    auto padded = [&](const std::vector<float>& g) {
      std::vector<float> p(offset, kSentinel);
      p.insert(p.end(), g.begin(), g.end());
      return p;
    };
    d_sum_ = to_device(start_);
    d_count_ = to_device(std::vector<std::int64_t>{7});
    d_g1_ = to_device(padded(g1_));
    d_g2_ = to_device(padded(g2_));
    restored("sum", d_sum_, start_);
    restored("count", d_count_, std::vector<std::int64_t>{7});
    restored("g1", d_g1_, padded(g1_));
    restored("g2", d_g2_, padded(g2_));
  }
  void run(cudaStream_t stream) override {
    fixed_accumulate(d_sum_.get() + offset_, d_count_.get(), d_g1_.get() + offset_, n_, 1.0, limit_,
                     stream);
    fixed_accumulate(d_sum_.get() + offset_, d_count_.get(), d_g2_.get() + offset_, n_, 1.0, limit_,
                     stream);
  }
  void check(CaseJudge& judge) override {
    std::vector<std::int64_t> range(start_.begin() + static_cast<std::ptrdiff_t>(offset_),
                                    start_.end());
    std::int64_t count = 7;
    count += fixed::accumulate(range, g1_, 1.0, limit_);
    count += fixed::accumulate(range, g2_, 1.0, limit_);
    judge.expect("the reference counts the values outside the limit",
                 count == 7 + static_cast<std::int64_t>(bad1_ + bad2_));
    std::vector<std::int64_t> want(start_.begin(),
                                   start_.begin() + static_cast<std::ptrdiff_t>(offset_));
    want.insert(want.end(), range.begin(), range.end());
    judge.compare("sum", from_device(d_sum_, offset_ + n_), want);
    judge.compare("count", from_device(d_count_, 1), std::vector<std::int64_t>{count});
    std::vector<float> zeroed(offset_, kSentinel);
    zeroed.resize(offset_ + n_, 0.0f);
    judge.compare("g1 (zeroed)", from_device(d_g1_, offset_ + n_), zeroed);
    judge.compare("g2 (zeroed)", from_device(d_g2_, offset_ + n_), zeroed);
  }

 private:
  std::size_t n_, offset_, bad1_ = 0, bad2_ = 0;
  double limit_ = 0;
  std::vector<float> g1_, g2_;
  std::vector<std::int64_t> start_;
  DeviceArray<std::int64_t> d_sum_, d_count_;
  DeviceArray<float> d_g1_, d_g2_;
};

// fixed_to_floats of sums formed on the host: fixed::to_floats without a count or with a zero
// one; NaN everywhere with a positive count (read on the device).
class FixedToFloats final : public Run {
 public:
  FixedToFloats(std::size_t n, std::size_t offset, FixedCount count)
      : n_(n), offset_(offset), count_(count) {
    const double limit = fixed::term_limit(kMicroBatches);
    sum_ = starting_sums(offset + n);
    std::vector<std::int64_t> range(sum_.begin() + static_cast<std::ptrdiff_t>(offset), sum_.end());
    fixed::accumulate(range, fixed_point_values(n, limit, 1.0, 70 + n, 0), 1.0, limit);
    fixed::accumulate(range, fixed_point_values(n, limit, 1.0, 71 + n, 1), 1.0, limit);
    std::copy(range.begin(), range.end(), sum_.begin() + static_cast<std::ptrdiff_t>(offset));
    d_sum_ = to_device(sum_);
    d_count_ = to_device(std::vector<std::int64_t>{count == FixedCount::positive ? 2 : 0});
    d_out_ = poisoned<float>(n);
    output("out", d_out_, n);
  }
  void run(cudaStream_t stream) override {
    fixed_to_floats(d_out_.get(), d_sum_.get() + offset_,
                    count_ == FixedCount::none ? nullptr : d_count_.get(), n_, factor(), stream);
  }
  void check(CaseJudge& judge) override {
    const auto got = from_device(d_out_, n_);
    if (count_ == FixedCount::positive) {
      std::size_t finite = 0;
      for (float x : got) finite += std::isnan(x) ? 0 : 1;
      judge.expect("NaN everywhere after a rejected term", finite == 0,
                   std::to_string(finite) + " of " + std::to_string(n_) + " not NaN");
      return;
    }
    const std::vector<std::int64_t> range(sum_.begin() + static_cast<std::ptrdiff_t>(offset_),
                                          sum_.end());
    std::vector<float> want(n_);
    fixed::to_floats(range, want, static_cast<double>(kMicroBatches));
    judge.compare("out", got, want);
  }

 private:
  static double factor() { return fixed::factor_for(static_cast<double>(kMicroBatches)); }
  std::size_t n_, offset_;
  FixedCount count_;
  std::vector<std::int64_t> sum_;
  DeviceArray<std::int64_t> d_sum_, d_count_;
  DeviceArray<float> d_out_;
};

// K parents with weights (powers of two, so the ties reach the rounding, and arbitrary and
// negative ones) and edge values at other indices each, so no index sums two terms near the
// limit: fixed_weighted_sum (an average straight to floats) and fixed_weighted_add (into a
// running exact sum, over the chunk [n/3, n) of the vectors) against fixed::Sum.
class FixedWeighted final : public Run {
 public:
  FixedWeighted(int K, std::size_t n, double divisor, bool add)
      : K_(K), n_(n), divisor_(divisor), add_(add) {
    static const double kWeights[] = {0.5, 0.25,  0.3141592653589793, -0.7, 1.0 / 3.0, 0.125,
                                      1.0, 0.0625};
    // The limit of K + 1 terms (the parents and the running sum's vector): a term next to it
    // plus the others' cannot leave int64 (where the host's signed sum would be undefined).
    limit_ = fixed::term_limit(K + 1);
    w_.assign(kWeights, kWeights + K);
    std::vector<const float*> pointers;
    for (int k = 0; k < K; ++k) {
      std::size_t bad = 0;
      x_.push_back(fixed_point_values(n, limit_, w_[static_cast<std::size_t>(k)], 80 + k,
                                      static_cast<std::size_t>(k) * 21, &bad));
      bad_ += bad;
      d_x_.push_back(to_device(x_.back()));
      pointers.push_back(d_x_.back().get());
    }
    d_pointers_ = to_device(pointers);
    d_w_ = to_device(w_);
    if (add) {
      first_ = n / 3;
      running_ = random_floats(n, -100, 100, 90);
      fixed::Sum running(n, limit_);
      running.add(running_, 0.75);
      chunk_.assign(running.raw().begin() + static_cast<std::ptrdiff_t>(first_),
                    running.raw().end());
      d_sum_ = to_device(chunk_);
      d_count_ = to_device(std::vector<std::int64_t>{5});
      restored("sum", d_sum_, chunk_);
      restored("count", d_count_, std::vector<std::int64_t>{5});
    } else {
      d_out_ = poisoned<float>(n);
      d_count_ = to_device(std::vector<std::int64_t>{0});
      output("out", d_out_, n);
      restored("count", d_count_, std::vector<std::int64_t>{0});
    }
  }
  void run(cudaStream_t stream) override {
    if (add_)
      fixed_weighted_add(d_sum_.get(), d_count_.get(), d_pointers_.get(), d_w_.get(), K_, first_,
                         n_ - first_, limit_, stream);
    else
      fixed_weighted_sum(d_out_.get(), d_count_.get(), d_pointers_.get(), d_w_.get(), K_, n_,
                         limit_, fixed::factor_for(divisor_), stream);
  }
  void check(CaseJudge& judge) override {
    fixed::Sum want(n_, limit_);
    for (int k = 0; k < K_; ++k)
      want.add(x_[static_cast<std::size_t>(k)], w_[static_cast<std::size_t>(k)]);
    judge.expect("the reference counts the terms outside the limit",
                 want.bad() == static_cast<std::int64_t>(bad_));
    if (n_ >= 1000) judge.expect("some terms are outside the limit", want.bad() > 0);
    if (!add_) {
      judge.compare("out", from_device(d_out_, n_), want.result(divisor_));
      judge.compare("count", from_device(d_count_, 1), std::vector<std::int64_t>{want.bad()});
      return;
    }
    fixed::Sum running(n_, limit_);
    running.add(running_, 0.75);
    for (int k = 0; k < K_; ++k)
      running.add(x_[static_cast<std::size_t>(k)], w_[static_cast<std::size_t>(k)]);
    const std::vector<std::int64_t> want_chunk(
        running.raw().begin() + static_cast<std::ptrdiff_t>(first_), running.raw().end());
    std::int64_t bad = 0;
    for (int k = 0; k < K_; ++k)
      for (std::size_t i = first_; i < n_; ++i)
        if (!(std::abs(static_cast<double>(x_[static_cast<std::size_t>(k)][i]) *
                       w_[static_cast<std::size_t>(k)]) < limit_))
          ++bad;
    judge.compare("sum", from_device(d_sum_, n_ - first_), want_chunk);
    judge.compare("count", from_device(d_count_, 1), std::vector<std::int64_t>{5 + bad});
  }

 private:
  int K_;
  std::size_t n_;
  double divisor_;
  bool add_;
  double limit_ = 0;
  std::size_t bad_ = 0, first_ = 0;
  std::vector<double> w_;
  std::vector<std::vector<float>> x_;
  std::vector<float> running_;
  std::vector<std::int64_t> chunk_;
  std::vector<DeviceArray<float>> d_x_;
  DeviceArray<const float*> d_pointers_;
  DeviceArray<double> d_w_;
  DeviceArray<float> d_out_;
  DeviceArray<std::int64_t> d_sum_, d_count_;
};

}  // namespace

// Bytes: each gradient read and zeroed, the sums read and written.
KernelCase fixed_accumulate_case(std::size_t n, std::size_t offset) {
  const double e = static_cast<double>(n);
  return make_case("fixed_accumulate",
                   {{"n", static_cast<long long>(n)}, {"offset", static_cast<long long>(offset)}},
                   "", 2 * 2 * e, 2 * e * (2 * kF32 + 2 * kI64),
                   [=] { return std::make_unique<FixedAccumulate>(n, offset); });
}

KernelCase fixed_to_floats_case(std::size_t n, std::size_t offset, FixedCount count) {
  const double e = static_cast<double>(n);
  const char* variant = count == FixedCount::none   ? "no_count"
                        : count == FixedCount::zero ? "count_zero"
                                                    : "count_positive";
  return make_case("fixed_to_floats",
                   {{"n", static_cast<long long>(n)}, {"offset", static_cast<long long>(offset)}},
                   variant, 2 * e, e * (kI64 + kF32),
                   [=] { return std::make_unique<FixedToFloats>(n, offset, count); });
}

// Bytes: the K parents read, the floats written.
KernelCase fixed_weighted_sum_case(int K, std::size_t n, double divisor) {
  const double e = static_cast<double>(n);
  return make_case(
      "fixed_weighted_sum",
      {{"K", K}, {"n", static_cast<long long>(n)}, {"divisor", static_cast<long long>(divisor)}},
      "", 2 * K * e, e * (K * kF32 + kF32),
      [=] { return std::make_unique<FixedWeighted>(K, n, divisor, false); });
}

// Bytes: the chunk of the K parents read, the sums read and written.
KernelCase fixed_weighted_add_case(int K, std::size_t n) {
  const double e = static_cast<double>(n - n / 3);
  return make_case("fixed_weighted_add", {{"K", K}, {"n", static_cast<long long>(n)}}, "",
                   2 * K * e, e * (K * kF32 + 2 * kI64),
                   [=] { return std::make_unique<FixedWeighted>(K, n, 1.0, true); });
}

}  // namespace btm::cuda::cases

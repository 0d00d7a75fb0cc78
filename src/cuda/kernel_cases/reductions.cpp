// reductions.cpp: the kernel cases of mean_of and sum_of_squares (kernels/reductions.cu),
// against sums in double on the host (cpu::sum_of_squares for the gradient norm).
#include <cstddef>
#include <numeric>
#include <vector>

#include "btm/cpu/kernels/reductions.hpp"
#include "ops.hpp"

namespace btm::cuda::cases {
namespace {

class MeanOf final : public Run {
 public:
  explicit MeanOf(int n) : n_(n), values_(random_floats(static_cast<std::size_t>(n), 0, 10, 37)) {
    d_values_ = to_device(values_);
    d_mean_ = poisoned<float>(1);
    output("mean", d_mean_, 1);
  }
  void run(cudaStream_t stream) override { mean_of(d_mean_.get(), d_values_.get(), n_, stream); }
  void check(CaseJudge& judge) override {
    const double want = std::accumulate(values_.begin(), values_.end(), 0.0) / n_;
    judge.compare("mean", static_cast<double>(from_device(d_mean_, 1)[0]), want);
  }

 private:
  int n_;
  std::vector<float> values_;
  DeviceArray<float> d_values_, d_mean_;
};

class SumOfSquares final : public Run {
 public:
  explicit SumOfSquares(std::size_t n) : n_(n), g_(random_floats(n, -0.5f, 0.5f, 39)) {
    d_g_ = to_device(g_);
    d_sum_ = poisoned<double>(1);
    d_scratch_ = poisoned<double>(sum_of_squares_scratch_doubles());
    output("sum", d_sum_, 1);
    output("scratch", d_scratch_, sum_of_squares_scratch_doubles());
  }
  void run(cudaStream_t stream) override {
    sum_of_squares(d_sum_.get(), d_scratch_.get(), d_g_.get(), n_, stream);
  }
  void check(CaseJudge& judge) override {
    judge.compare("sum", from_device(d_sum_, 1)[0], cpu::sum_of_squares(g_.data(), n_));
  }

 private:
  std::size_t n_;
  std::vector<float> g_;
  DeviceArray<float> d_g_;
  DeviceArray<double> d_sum_, d_scratch_;
};

}  // namespace

KernelCase mean_of_case(int n) {
  return make_case("mean_of", {{"n", n}}, "", n, n * kF32 + kF32,
                   [n] { return std::make_unique<MeanOf>(n); });
}

KernelCase sum_of_squares_case(std::size_t n) {
  const double e = static_cast<double>(n);
  return make_case("sum_of_squares", {{"n", static_cast<long long>(n)}}, "", 2 * e, e * kF32 + kF64,
                   [n] { return std::make_unique<SumOfSquares>(n); });
}

}  // namespace btm::cuda::cases

// layernorm.cpp: the kernel cases of layernorm_forward and layernorm_backward
// (kernels/layernorm.cu) against cpu::layernorm_*; the backward overwriting dinp or adding to
// it (the residual stream's gradient), with dw and db accumulating from non-zero values.
#include <cstddef>
#include <vector>

#include "btm/cpu/kernels/layernorm.hpp"
#include "ops.hpp"

namespace btm::cuda::cases {
namespace {

class LayerNormForward final : public Run {
 public:
  LayerNormForward(int N, int C) : N_(N), C_(C) {
    x_ = random_bf16_values(static_cast<std::size_t>(N) * C, 2.0f, 8);
    w_ = random_bf16_values(C, 1.5f, 9);
    b_ = random_bf16_values(C, 0.5f, 10);
    d_x_ = to_device_bf16(x_);
    d_w_ = to_device_bf16(w_);
    d_b_ = to_device_bf16(b_);
    d_out_ = poisoned<bf16>(x_.size());
    d_mean_ = poisoned<float>(N);
    d_rstd_ = poisoned<float>(N);
    output("out", d_out_, x_.size());
    output("mean", d_mean_, N);
    output("rstd", d_rstd_, N);
  }
  void run(cudaStream_t stream) override {
    layernorm_forward(d_out_.get(), d_mean_.get(), d_rstd_.get(), d_x_.get(), d_w_.get(),
                      d_b_.get(), N_, C_, stream);
  }
  void check(CaseJudge& judge) override {
    std::vector<float> want(x_.size()), mean(N_), rstd(N_);
    cpu::layernorm_forward(want.data(), mean.data(), rstd.data(), x_.data(), w_.data(), b_.data(),
                           N_, C_);
    judge.compare("out", from_device_bf16(d_out_, x_.size()), want);
    judge.compare("mean", from_device(d_mean_, N_), mean);
    judge.compare("rstd", from_device(d_rstd_, N_), rstd);
  }

 private:
  int N_, C_;
  std::vector<float> x_, w_, b_;
  DeviceArray<bf16> d_x_, d_w_, d_b_, d_out_;
  DeviceArray<float> d_mean_, d_rstd_;
};

class LayerNormBackward final : public Run {
 public:
  LayerNormBackward(int N, int C, bool accumulate) : N_(N), C_(C), accumulate_(accumulate) {
    const std::size_t n = static_cast<std::size_t>(N) * C;
    x_ = random_bf16_values(n, 2.0f, 15);
    w_ = random_bf16_values(C, 1.5f, 16);
    const auto b = random_bf16_values(C, 0.5f, 17);
    dout_ = random_bf16_values(n, 1.0f, 18);
    std::vector<float> out(n);
    mean_.resize(N);
    rstd_.resize(N);
    cpu::layernorm_forward(out.data(), mean_.data(), rstd_.data(), x_.data(), w_.data(), b.data(),
                           N, C);
    old_dinp_ = random_bf16_values(n, 1.0f, 19);
    old_dw_ = random_floats(C, -1, 1, 20);
    old_db_ = random_floats(C, -1, 1, 21);
    d_x_ = to_device_bf16(x_);
    d_w_ = to_device_bf16(w_);
    d_dout_ = to_device_bf16(dout_);
    d_mean_ = to_device(mean_);
    d_rstd_ = to_device(rstd_);
    d_scratch_ = poisoned<float>(layernorm_backward_scratch_floats(C));
    d_dinp_ = poisoned<bf16>(n);
    d_dw_ = to_device(old_dw_);
    d_db_ = to_device(old_db_);
    if (accumulate)
      restored_bf16("dinp", d_dinp_, old_dinp_);
    else
      output("dinp", d_dinp_, n);
    restored("dw", d_dw_, old_dw_);
    restored("db", d_db_, old_db_);
    output("scratch", d_scratch_, layernorm_backward_scratch_floats(C));
  }
  void run(cudaStream_t stream) override {
    layernorm_backward(d_dinp_.get(), d_dw_.get(), d_db_.get(), d_scratch_.get(), d_dout_.get(),
                       d_x_.get(), d_w_.get(), d_mean_.get(), d_rstd_.get(), N_, C_, accumulate_,
                       stream);
  }
  void check(CaseJudge& judge) override {
    const std::size_t n = x_.size();
    auto want_dw = old_dw_, want_db = old_db_;
    std::vector<float> want_dinp(n);
    cpu::layernorm_backward(want_dinp.data(), want_dw.data(), want_db.data(), dout_.data(),
                            x_.data(), w_.data(), mean_.data(), rstd_.data(), N_, C_);
    if (accumulate_)
      for (std::size_t i = 0; i < n; ++i) want_dinp[i] += old_dinp_[i];
    judge.compare("dinp", from_device_bf16(d_dinp_, n), want_dinp);
    judge.compare("dw", from_device(d_dw_, C_), want_dw);
    judge.compare("db", from_device(d_db_, C_), want_db);
  }

 private:
  int N_, C_;
  bool accumulate_;
  std::vector<float> x_, w_, dout_, mean_, rstd_, old_dinp_, old_dw_, old_db_;
  DeviceArray<bf16> d_x_, d_w_, d_dout_, d_dinp_;
  DeviceArray<float> d_mean_, d_rstd_, d_scratch_, d_dw_, d_db_;
};

}  // namespace

// Bytes: inp read, w and b once, out written, mean and rstd written.
KernelCase layernorm_forward_case(int N, int C) {
  const double n = static_cast<double>(N) * C;
  return make_case("layernorm_forward", {{"N", N}, {"C", C}}, "", 8 * n,
                   2 * n * kBf16 + 2.0 * C * kBf16 + 2.0 * N * kF32,
                   [=] { return std::make_unique<LayerNormForward>(N, C); });
}

// Bytes: dout and inp read, dinp written (and read when accumulating), w, mean, rstd read, dw
// and db read and written.
KernelCase layernorm_backward_case(int N, int C, bool accumulate) {
  const double n = static_cast<double>(N) * C;
  return make_case("layernorm_backward", {{"N", N}, {"C", C}}, accumulate ? "accumulate" : "",
                   14 * n,
                   (accumulate ? 4 : 3) * n * kBf16 + C * kBf16 + 2.0 * N * kF32 + 4.0 * C * kF32,
                   [=] { return std::make_unique<LayerNormBackward>(N, C, accumulate); });
}

}  // namespace btm::cuda::cases

// gelu.cpp: the kernel cases of gelu_forward and gelu_backward (kernels/gelu.cu) against
// cpu::gelu_*; the backward in place (dinp = dout), as the engine runs it.
#include <cstddef>
#include <vector>

#include "btm/cpu/kernels/gelu.hpp"
#include "ops.hpp"

namespace btm::cuda::cases {
namespace {

class Gelu final : public Run {
 public:
  Gelu(std::size_t n, bool backward) : n_(n), backward_(backward) {
    x_ = random_bf16_values(n, 4.0f, 30);
    dout_ = random_bf16_values(n, 1.0f, 31);
    d_x_ = to_device_bf16(x_);
    if (backward) {
      d_d_ = to_device_bf16(dout_);
      restored_bf16("dinp", d_d_, dout_);  // dout, overwritten by dinp
    } else {
      d_d_ = poisoned<bf16>(n);
      output("out", d_d_, n);
    }
  }
  void run(cudaStream_t stream) override {
    if (backward_)
      gelu_backward(d_d_.get(), d_x_.get(), d_d_.get(), n_, stream);
    else
      gelu_forward(d_d_.get(), d_x_.get(), n_, stream);
  }
  void check(CaseJudge& judge) override {
    std::vector<float> want(n_);
    if (backward_)
      cpu::gelu_backward(want.data(), x_.data(), dout_.data(), n_);
    else
      cpu::gelu_forward(want.data(), x_.data(), n_);
    judge.compare(backward_ ? "dinp" : "out", from_device_bf16(d_d_, n_), want);
  }

 private:
  std::size_t n_;
  bool backward_;
  std::vector<float> x_, dout_;
  DeviceArray<bf16> d_x_, d_d_;
};

}  // namespace

KernelCase gelu_forward_case(std::size_t n) {
  const double e = static_cast<double>(n);
  return make_case("gelu_forward", {{"n", static_cast<long long>(n)}}, "", 10 * e, 2 * e * kBf16,
                   [n] { return std::make_unique<Gelu>(n, false); });
}

KernelCase gelu_backward_case(std::size_t n) {
  const double e = static_cast<double>(n);
  return make_case("gelu_backward", {{"n", static_cast<long long>(n)}}, "in_place", 16 * e,
                   3 * e * kBf16, [n] { return std::make_unique<Gelu>(n, true); });
}

}  // namespace btm::cuda::cases

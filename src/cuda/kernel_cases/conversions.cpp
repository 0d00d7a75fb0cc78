// conversions.cpp: the kernel cases of float_to_bf16 and bf16_to_float (kernels/conversions.cu):
// bitwise the host's conversions (round to nearest even; exact) of values over many magnitudes,
// exact rounding ties, zeros and infinities.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ops.hpp"

namespace btm::cuda::cases {
namespace {

// Magnitudes 1e-30 .. 1e30 of both signs, and at the start: +-0, +-inf, the largest float, ties
// halfway between two bf16 (the lower 16 bits 0x8000, with even and odd upper halves).
std::vector<float> conversion_values(std::size_t n, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) {
    const double magnitude = std::pow(10.0, -30.0 + 60.0 * rng.uniform());
    x = static_cast<float>(rng.uniform() < 0.5 ? -magnitude : magnitude);
  }
  const std::uint32_t ties[] = {0x3f808000u, 0x3f818000u, 0xbf808000u, 0xbf818000u, 0x00018000u};
  const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, 3.4028235e38f, 1.0f, -1.5f};
  std::size_t i = 0;
  for (float s : specials)
    if (i < n) v[i++] = s;
  for (std::uint32_t bits : ties)
    if (i < n) std::memcpy(&v[i++], &bits, sizeof(float));
  return v;
}

class FloatToBf16 final : public Run {
 public:
  explicit FloatToBf16(std::size_t n) : n_(n), in_(conversion_values(n, 91)) {
    d_in_ = to_device(in_);
    d_out_ = poisoned<bf16>(n);
    output("out", d_out_, n);
  }
  void run(cudaStream_t stream) override { float_to_bf16(d_out_.get(), d_in_.get(), n_, stream); }
  void check(CaseJudge& judge) override {
    std::vector<float> want(n_);
    for (std::size_t i = 0; i < n_; ++i) want[i] = round_bf16(in_[i]);
    judge.compare("out", from_device_bf16(d_out_, n_), want);
  }

 private:
  std::size_t n_;
  std::vector<float> in_;
  DeviceArray<float> d_in_;
  DeviceArray<bf16> d_out_;
};

class Bf16ToFloat final : public Run {
 public:
  explicit Bf16ToFloat(std::size_t n) : n_(n) {
    in_ = conversion_values(n, 92);
    for (float& x : in_) x = round_bf16(x);
    d_in_ = to_device_bf16(in_);
    d_out_ = poisoned<float>(n);
    output("out", d_out_, n);
  }
  void run(cudaStream_t stream) override { bf16_to_float(d_out_.get(), d_in_.get(), n_, stream); }
  void check(CaseJudge& judge) override { judge.compare("out", from_device(d_out_, n_), in_); }

 private:
  std::size_t n_;
  std::vector<float> in_;
  DeviceArray<bf16> d_in_;
  DeviceArray<float> d_out_;
};

}  // namespace

KernelCase float_to_bf16_case(std::size_t n) {
  const double e = static_cast<double>(n);
  return make_case("float_to_bf16", {{"n", static_cast<long long>(n)}}, "", 0, e * (kF32 + kBf16),
                   [n] { return std::make_unique<FloatToBf16>(n); });
}

KernelCase bf16_to_float_case(std::size_t n) {
  const double e = static_cast<double>(n);
  return make_case("bf16_to_float", {{"n", static_cast<long long>(n)}}, "", 0, e * (kF32 + kBf16),
                   [n] { return std::make_unique<Bf16ToFloat>(n); });
}

}  // namespace btm::cuda::cases

// adamw.cpp: the kernel cases of adamw_update (kernels/adamw.cu) on a flat vector of three
// tensors (decayed weight, undecayed bias, decayed weight), float4 and scalar paths: against
// cpu::adamw_update per tensor with the clip factor of the GPU's sum of squares (clipping
// active), the bf16 copy exactly the GPU's fp32 parameters rounded; and a step whose gradient
// holds a NaN or an infinity (sum_of_squares then adamw_update, with and without clipping):
// skipped on the device, p, its bf16 copy, m and v bitwise unchanged.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "btm/cpu/kernels/adamw.hpp"
#include "btm/cpu/kernels/reductions.hpp"
#include "ops.hpp"

namespace btm::cuda::cases {
namespace {

constexpr float kLr = 1e-2f, kBeta1 = 0.9f, kBeta2 = 0.95f, kEps = 1e-8f, kWeightDecay = 0.1f;
constexpr std::uint8_t kDecays[] = {1, 0, 1};

// The flat vector's segments on the device.
struct Segments {
  explicit Segments(const std::vector<std::size_t>& sizes) {
    std::size_t n = 0;
    for (std::size_t s : sizes) ends.push_back(n += s);
    decay.assign(kDecays, kDecays + sizes.size());
    d_ends = to_device(ends);
    d_decay = to_device(decay);
  }
  DecaySegments on_device(bool vector) const {
    return {d_ends.get(), d_decay.get(), static_cast<int>(ends.size()), vector};
  }
  std::size_t n() const { return ends.back(); }
  std::vector<std::uint64_t> ends;
  std::vector<std::uint8_t> decay;
  DeviceArray<std::uint64_t> d_ends;
  DeviceArray<std::uint8_t> d_decay;
};

class AdamW final : public Run {
 public:
  AdamW(std::vector<std::size_t> sizes, bool vector)
      : sizes_(std::move(sizes)), segments_(sizes_), vector_(vector) {
    const std::size_t n = segments_.n();
    p_ = random_floats(n, -1, 1, 38);
    g_ = random_floats(n, -0.5f, 0.5f, 39);
    m_ = random_floats(n, -0.1f, 0.1f, 40);
    v_ = random_floats(n, 0, 0.01f, 41);
    d_p_ = to_device(p_);
    d_g_ = to_device(g_);
    d_m_ = to_device(m_);
    d_v_ = to_device(v_);
    d_pb_ = poisoned<bf16>(n);
    d_sumsq_ = poisoned<double>(1);
    DeviceArray<double> scratch(sum_of_squares_scratch_doubles());
    sum_of_squares(d_sumsq_.get(), scratch.get(), d_g_.get(), n, nullptr);
    sumsq_ = from_device(d_sumsq_, 1)[0];
    restored("p", d_p_, p_);
    restored("m", d_m_, m_);
    restored("v", d_v_, v_);
    output("p_bf16", d_pb_, n);
  }
  void run(cudaStream_t stream) override {
    adamw_update(d_p_.get(), d_pb_.get(), d_g_.get(), d_m_.get(), d_v_.get(), segments_.n(),
                 segments_.on_device(vector_), kLr, kBeta1, kBeta2, kEps, kWeightDecay, bias1(),
                 bias2(), d_sumsq_.get(), kGradClip, stream);
  }
  void check(CaseJudge& judge) override {
    const std::size_t n = segments_.n();
    // The same clip factor as the kernel: min(1, clip / (norm + 1e-6)) in double, from the GPU's
    // sum of squares (itself a case of its own).
    const float clip = static_cast<float>(std::min(1.0, kGradClip / (std::sqrt(sumsq_) + 1e-6)));
    judge.expect("clipping active", clip < 1.0f, "clip factor " + std::to_string(clip));
    auto p = p_, m = m_, v = v_;
    std::size_t begin = 0;
    for (std::size_t k = 0; k < sizes_.size(); ++k) {
      cpu::adamw_update(p.data() + begin, g_.data() + begin, m.data() + begin, v.data() + begin,
                        sizes_[k], kLr, kBeta1, kBeta2, kEps, kDecays[k] ? kWeightDecay : 0.0f,
                        bias1(), bias2(), clip);
      begin += sizes_[k];
    }
    const auto got_p = from_device(d_p_, n);
    judge.compare("p", got_p, p);
    judge.compare("m", from_device(d_m_, n), m);
    judge.compare("v", from_device(d_v_, n), v);
    std::vector<float> rounded(n);
    for (std::size_t i = 0; i < n; ++i) rounded[i] = round_bf16(got_p[i]);
    judge.compare("p_bf16", from_device_bf16(d_pb_, n), rounded);
  }

 private:
  static constexpr float kGradClip = 1.0f;  // below the norm: clipping is active
  static float bias1() { return 1.0f - std::pow(kBeta1, 3.0f); }
  static float bias2() { return 1.0f - std::pow(kBeta2, 3.0f); }
  std::vector<std::size_t> sizes_;
  Segments segments_;
  bool vector_;
  double sumsq_ = 0;
  std::vector<float> p_, g_, m_, v_;
  DeviceArray<float> d_p_, d_g_, d_m_, d_v_;
  DeviceArray<bf16> d_pb_;
  DeviceArray<double> d_sumsq_;
};

class AdamWSkip final : public Run {
 public:
  AdamWSkip(std::vector<std::size_t> sizes, bool vector, float bad, float grad_clip)
      : segments_(sizes), vector_(vector), grad_clip_(grad_clip) {
    const std::size_t n = segments_.n();
    p_ = random_floats(n, -1, 1, 60);
    m_ = random_floats(n, -0.1f, 0.1f, 61);
    v_ = random_floats(n, 0, 0.01f, 62);
    auto g = random_floats(n, -0.5f, 0.5f, 63);
    g[n / 2] = bad;
    pb_ = p_;
    for (float& x : pb_) x = round_bf16(x);
    d_p_ = to_device(p_);
    d_g_ = to_device(g);
    d_m_ = to_device(m_);
    d_v_ = to_device(v_);
    d_pb_ = to_device_bf16(pb_);
    d_sumsq_ = poisoned<double>(1);
    d_scratch_ = poisoned<double>(sum_of_squares_scratch_doubles());
    restored("p", d_p_, p_);
    restored("m", d_m_, m_);
    restored("v", d_v_, v_);
    restored_bf16("p_bf16", d_pb_, pb_);
    output("sum of squares", d_sumsq_, 1);
    output("scratch", d_scratch_, sum_of_squares_scratch_doubles());
  }
  void run(cudaStream_t stream) override {
    const std::size_t n = segments_.n();
    sum_of_squares(d_sumsq_.get(), d_scratch_.get(), d_g_.get(), n, stream);
    adamw_update(d_p_.get(), d_pb_.get(), d_g_.get(), d_m_.get(), d_v_.get(), n,
                 segments_.on_device(vector_), kLr, kBeta1, kBeta2, kEps, kWeightDecay, 0.5f, 0.5f,
                 d_sumsq_.get(), grad_clip_, stream);
  }
  void check(CaseJudge& judge) override {
    const std::size_t n = segments_.n();
    const double sumsq = from_device(d_sumsq_, 1)[0];
    judge.expect("the sum of squares is not finite", !std::isfinite(sumsq),
                 "sum of squares " + std::to_string(sumsq));
    judge.compare("p", from_device(d_p_, n), p_);
    judge.compare("m", from_device(d_m_, n), m_);
    judge.compare("v", from_device(d_v_, n), v_);
    judge.compare("p_bf16", from_device_bf16(d_pb_, n), pb_);
  }

 private:
  Segments segments_;
  bool vector_;
  float grad_clip_;
  std::vector<float> p_, m_, v_, pb_;
  DeviceArray<float> d_p_, d_g_, d_m_, d_v_;
  DeviceArray<bf16> d_pb_;
  DeviceArray<double> d_sumsq_, d_scratch_;
};

double total(const std::vector<std::size_t>& sizes) {
  double n = 0;
  for (std::size_t s : sizes) n += static_cast<double>(s);
  return n;
}

// The shape: the flat vector's length and its middle (undecayed) tensor's.
std::vector<std::pair<std::string, long long>> dims(const std::vector<std::size_t>& sizes) {
  return {{"n", static_cast<long long>(total(sizes))}, {"bias", static_cast<long long>(sizes[1])}};
}

}  // namespace

// FLOPs: ~ 12 per element. Bytes: p, m, v read and written, g read, the bf16 copy written.
KernelCase adamw_update_case(std::vector<std::size_t> sizes, bool vector) {
  const double n = total(sizes);
  return make_case("adamw_update", dims(sizes), vector ? "float4" : "scalar", 12 * n,
                   n * (7 * kF32 + kBf16), [=] { return std::make_unique<AdamW>(sizes, vector); });
}

// Bytes: the gradient read by the sum of squares; the skipped update reads and writes nothing.
KernelCase adamw_skip_case(std::vector<std::size_t> sizes, bool vector, float bad,
                           float grad_clip) {
  const double n = total(sizes);
  const std::string variant = std::string(vector ? "float4" : "scalar") + "_" +
                              (std::isnan(bad) ? "nan" : "inf") + "_" +
                              (grad_clip > 0 ? "clip" : "noclip");
  return make_case("adamw_skip", dims(sizes), variant, 2 * n, n * kF32,
                   [=] { return std::make_unique<AdamWSkip>(sizes, vector, bad, grad_clip); });
}

}  // namespace btm::cuda::cases

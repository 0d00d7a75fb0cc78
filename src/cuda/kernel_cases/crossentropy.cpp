// crossentropy.cpp: the kernel cases of the classifier's loss (kernels/crossentropy.cu) against
// cpu::crossentropy_forward_backward. Training (bf16 logits): the loss alone, which must leave
// the logits as they are, and the loss with the gradient written over the logits (the engine's
// way), which must give the bits of the out-of-place and loss-only runs, exact zeros in the
// padded columns, and the softmax part close also without the target entries (which dominate
// the norms). Evaluation: fp32 logits, no gradient.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "btm/cpu/kernels/crossentropy.hpp"
#include "ops.hpp"

namespace btm::cuda::cases {
namespace {

// N rows of Vp logits, the padded columns [V, Vp) large (they must be ignored), targets with
// the last column (next to the padding) and the first among them.
struct Logits {
  Logits(int N, int V, int Vp)
      : logits(random_bf16_values(static_cast<std::size_t>(N) * Vp, 4.0f, 35)) {
    for (int i = 0; i < N; ++i)
      for (int j = V; j < Vp; ++j) logits[static_cast<std::size_t>(i) * Vp + j] = 50.0f;
    targets = random_tokens(N, V, 36);
    targets[0] = V - 1;
    if (N > 1) targets[1] = 0;
  }
  std::vector<float> logits;
  std::vector<std::int32_t> targets;
};

class CrossEntropy final : public Run {
 public:
  CrossEntropy(int N, int V, int Vp, CrossEntropyRun mode)
      : N_(N), V_(V), Vp_(Vp), mode_(mode), in_(N, V, Vp), dloss_(1.0f / N) {
    d_logits_ = to_device_bf16(in_.logits);
    d_targets_ = to_device(in_.targets);
    d_losses_ = poisoned<float>(N);
    output("losses", d_losses_, N);
    // The logits: an input of the loss alone (written: they must stay), the gradient's output
    // in place.
    restored_bf16("logits", d_logits_, in_.logits);
  }
  void run(cudaStream_t stream) override {
    bf16* dlogits = mode_ == CrossEntropyRun::in_place ? d_logits_.get() : nullptr;
    crossentropy_forward_backward(d_losses_.get(), dlogits, d_logits_.get(), d_targets_.get(), N_,
                                  V_, Vp_, dloss_, stream);
  }
  void check(CaseJudge& judge) override {
    const std::size_t n = in_.logits.size();
    std::vector<float> want_losses(N_), want_d(n);
    cpu::crossentropy_forward_backward(want_losses.data(), want_d.data(), in_.logits.data(),
                                       in_.targets.data(), N_, V_, Vp_, dloss_);
    const auto losses = from_device(d_losses_, N_);
    judge.compare("losses", losses, want_losses);
    if (mode_ == CrossEntropyRun::loss_only) {
      judge.compare("logits", from_device_bf16(d_logits_, n), in_.logits);
      return;
    }
    auto got_d = from_device_bf16(d_logits_, n);
    judge.compare("dlogits", got_d, want_d);
    std::vector<float> padding;
    for (int i = 0; i < N_; ++i)
      for (int j = V_; j < Vp_; ++j)
        padding.push_back(got_d[static_cast<std::size_t>(i) * Vp_ + j]);
    judge.compare("dlogits padding", padding, std::vector<float>(padding.size(), 0.0f));

    // The loss alone, and the gradient into another array, from fresh logits: the same bits.
    auto d_logits = to_device_bf16(in_.logits);
    auto d_losses_only = poisoned<float>(N_);
    crossentropy_forward_backward(d_losses_only.get(), nullptr, d_logits.get(), d_targets_.get(),
                                  N_, V_, Vp_, dloss_, nullptr);
    judge.compare("losses (= loss only)", losses, from_device(d_losses_only, N_));
    auto d_other = poisoned<bf16>(n);
    auto d_losses_other = poisoned<float>(N_);
    crossentropy_forward_backward(d_losses_other.get(), d_other.get(), d_logits.get(),
                                  d_targets_.get(), N_, V_, Vp_, dloss_, nullptr);
    judge.compare("losses (= out of place)", losses, from_device(d_losses_other, N_));
    judge.compare("dlogits (= out of place)", got_d, from_device_bf16(d_other, n));

    for (int i = 0; i < N_; ++i) {
      const std::size_t t = static_cast<std::size_t>(i) * Vp_ + in_.targets[i];
      got_d[t] = 0.0f, want_d[t] = 0.0f;
    }
    judge.compare("dlogits without the targets", got_d, want_d);
  }

 private:
  int N_, V_, Vp_;
  CrossEntropyRun mode_;
  Logits in_;
  float dloss_;
  DeviceArray<bf16> d_logits_;
  DeviceArray<std::int32_t> d_targets_;
  DeviceArray<float> d_losses_;
};

class CrossEntropyFloat final : public Run {
 public:
  CrossEntropyFloat(int N, int V, int Vp) : N_(N), V_(V), Vp_(Vp), in_(N, V, Vp) {
    d_logits_ = to_device(in_.logits);
    d_targets_ = to_device(in_.targets);
    d_losses_ = poisoned<float>(N);
    output("losses", d_losses_, N);
  }
  void run(cudaStream_t stream) override {
    crossentropy_forward(d_losses_.get(), d_logits_.get(), d_targets_.get(), N_, V_, Vp_, stream);
  }
  void check(CaseJudge& judge) override {
    std::vector<float> want(N_), d(in_.logits.size());
    cpu::crossentropy_forward_backward(want.data(), d.data(), in_.logits.data(), in_.targets.data(),
                                       N_, V_, Vp_, 1.0f / N_);
    judge.compare("losses", from_device(d_losses_, N_), want);
  }

 private:
  int N_, V_, Vp_;
  Logits in_;
  DeviceArray<float> d_logits_, d_losses_;
  DeviceArray<std::int32_t> d_targets_;
};

}  // namespace

// FLOPs: ~ 4 per logit (max, exp, sum) and 3 more for the gradient. Bytes: the logits read
// (and the gradient written), the targets and losses.
KernelCase crossentropy_forward_backward_case(int N, int V, int Vp, CrossEntropyRun mode) {
  const double n = static_cast<double>(N) * Vp;
  const bool grad = mode == CrossEntropyRun::in_place;
  return make_case("crossentropy_forward_backward", {{"N", N}, {"V", V}, {"Vp", Vp}},
                   grad ? "in_place" : "loss_only", (grad ? 7 : 4) * n,
                   (grad ? 2 : 1) * n * kBf16 + N * (kI32 + kF32),
                   [=] { return std::make_unique<CrossEntropy>(N, V, Vp, mode); });
}

KernelCase crossentropy_forward_case(int N, int V, int Vp) {
  const double n = static_cast<double>(N) * Vp;
  return make_case("crossentropy_forward", {{"N", N}, {"V", V}, {"Vp", Vp}}, "", 4 * n,
                   n * kF32 + N * (kI32 + kF32),
                   [=] { return std::make_unique<CrossEntropyFloat>(N, V, Vp); });
}

}  // namespace btm::cuda::cases

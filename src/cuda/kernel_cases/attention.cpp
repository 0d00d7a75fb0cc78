// attention.cpp: the kernel cases of the materialized attention (kernels/attention.cu): the
// head split and merge against the host's permutation (bitwise), and attention_forward and
// attention_backward against cpu::attention_*.
#include <cstddef>
#include <vector>

#include "btm/cpu/kernels/attention.hpp"
#include "ops.hpp"

namespace btm::cuda::cases {
namespace {

// The k block of qkv[B, T, 3C] (row stride 3C, columns C .. 2C) split into [B, NH, T, hs] and
// merged back into an array that holds other values elsewhere (they must stay).
class Heads final : public Run {
 public:
  Heads(int B, int T, int NH, int hs, bool split) : B_(B), T_(T), NH_(NH), hs_(hs), split_(split) {
    qkv_ = random_bf16_values(static_cast<std::size_t>(B) * T * 3 * C(), 1.0f, 32);
    if (split) {
      d_in_ = to_device_bf16(qkv_);
      d_out_ = poisoned<bf16>(head_size());
      output("out", d_out_, head_size());
    } else {
      heads_ = random_bf16_values(head_size(), 1.0f, 33);
      d_in_ = to_device_bf16(heads_);
      d_out_ = to_device_bf16(qkv_);
      restored_bf16("out", d_out_, qkv_);
    }
  }
  void run(cudaStream_t stream) override {
    if (split_)
      heads_split(d_out_.get(), d_in_.get(), B_, T_, NH_, hs_, 3 * C(), C(), stream);
    else
      heads_merge(d_out_.get(), d_in_.get(), B_, T_, NH_, hs_, 3 * C(), C(), stream);
  }
  void check(CaseJudge& judge) override {
    std::vector<float> want = split_ ? std::vector<float>(head_size()) : qkv_;
    for (int b = 0; b < B_; ++b)
      for (int h = 0; h < NH_; ++h)
        for (int t = 0; t < T_; ++t)
          for (int d = 0; d < hs_; ++d) {
            const std::size_t head = ((static_cast<std::size_t>(b) * NH_ + h) * T_ + t) * hs_ + d;
            const std::size_t token =
                (static_cast<std::size_t>(b) * T_ + t) * 3 * C() + C() + h * hs_ + d;
            if (split_)
              want[head] = qkv_[token];
            else
              want[token] = heads_[head];
          }
    judge.compare("out", from_device_bf16(d_out_, want.size()), want);
  }

 private:
  int C() const { return NH_ * hs_; }
  std::size_t head_size() const { return static_cast<std::size_t>(B_) * T_ * C(); }
  int B_, T_, NH_, hs_;
  bool split_;
  std::vector<float> qkv_, heads_;
  DeviceArray<bf16> d_in_, d_out_;
};

class Attention final : public Run {
 public:
  Attention(int B, int T, int C, int NH, bool backward)
      : B_(B), T_(T), C_(C), NH_(NH), backward_(backward) {
    qkv_ = random_bf16_values(3 * nc(), 1.0f, 33);
    dout_ = random_bf16_values(nc(), 1.0f, 34);
    d_qkv_ = to_device_bf16(qkv_);
    d_out_ = poisoned<bf16>(nc());
    d_qkvr_ = poisoned<bf16>(3 * nc());
    d_att_ = poisoned<bf16>(att_size());
    d_vaccum_ = poisoned<bf16>(nc());
    if (!backward) {
      output("out", d_out_, nc());
      output("qkvr", d_qkvr_, 3 * nc());
      output("att", d_att_, att_size());
      output("vaccum", d_vaccum_, nc());
      return;
    }
    // The backward starts from the GPU forward's per-head q, k, v and probabilities.
    attention_forward(blas_, d_out_.get(), d_qkvr_.get(), d_att_.get(), d_vaccum_.get(),
                      d_qkv_.get(), B, T, C, NH, nullptr);
    d_dout_ = to_device_bf16(dout_);
    d_dqkv_ = poisoned<bf16>(3 * nc());
    d_dqkvr_ = poisoned<bf16>(3 * nc());
    d_datt_ = poisoned<bf16>(att_size());
    d_dvaccum_ = poisoned<bf16>(nc());
    output("dqkv", d_dqkv_, 3 * nc());
    output("dqkvr", d_dqkvr_, 3 * nc());
    output("datt", d_datt_, att_size());
    output("dvaccum", d_dvaccum_, nc());
  }
  void run(cudaStream_t stream) override {
    if (backward_)
      attention_backward(blas_, d_dqkv_.get(), d_dqkvr_.get(), d_datt_.get(), d_dvaccum_.get(),
                         d_dout_.get(), d_qkvr_.get(), d_att_.get(), B_, T_, C_, NH_, stream);
    else
      attention_forward(blas_, d_out_.get(), d_qkvr_.get(), d_att_.get(), d_vaccum_.get(),
                        d_qkv_.get(), B_, T_, C_, NH_, stream);
  }
  void check(CaseJudge& judge) override {
    std::vector<float> want(nc()), want_att(att_size());
    cpu::attention_forward(want.data(), want_att.data(), qkv_.data(), B_, T_, C_, NH_);
    if (!backward_) {
      judge.compare("out", from_device_bf16(d_out_, nc()), want);
      judge.compare("att", from_device_bf16(d_att_, att_size()), want_att);
      return;
    }
    std::vector<float> want_dqkv(3 * nc());
    cpu::attention_backward(want_dqkv.data(), dout_.data(), qkv_.data(), want_att.data(), B_, T_,
                            C_, NH_);
    judge.compare("dqkv", from_device_bf16(d_dqkv_, 3 * nc()), want_dqkv);
  }

 private:
  std::size_t nc() const { return static_cast<std::size_t>(B_) * T_ * C_; }
  std::size_t att_size() const { return static_cast<std::size_t>(B_) * NH_ * T_ * T_; }
  int B_, T_, C_, NH_;
  bool backward_;
  Blas blas_;
  std::vector<float> qkv_, dout_;
  DeviceArray<bf16> d_qkv_, d_out_, d_qkvr_, d_att_, d_vaccum_;
  DeviceArray<bf16> d_dout_, d_dqkv_, d_dqkvr_, d_datt_, d_dvaccum_;
};

}  // namespace

// Bytes: the head's elements read and written once.
KernelCase heads_split_case(int B, int T, int NH, int hs) {
  const double n = static_cast<double>(B) * T * NH * hs;
  return make_case("heads_split", {{"B", B}, {"T", T}, {"NH", NH}, {"hs", hs}}, "", 0,
                   2 * n * kBf16, [=] { return std::make_unique<Heads>(B, T, NH, hs, true); });
}

KernelCase heads_merge_case(int B, int T, int NH, int hs) {
  const double n = static_cast<double>(B) * T * NH * hs;
  return make_case("heads_merge", {{"B", B}, {"T", T}, {"NH", NH}, {"hs", hs}}, "", 0,
                   2 * n * kBf16, [=] { return std::make_unique<Heads>(B, T, NH, hs, false); });
}

// FLOPs: the causal attention's useful products, 4 B T^2 C / 2 forward and 2.5 times that
// backward (FlashAttention's convention; the materialized GEMMs compute the whole T x T).
// Bytes: qkv, the per-head copies, the probabilities and the outputs read or written once.
KernelCase attention_forward_case(int B, int T, int C, int NH) {
  const double nc = static_cast<double>(B) * T * C, att = static_cast<double>(B) * NH * T * T;
  return make_case("attention_forward", {{"B", B}, {"T", T}, {"C", C}, {"NH", NH}}, "", 2 * nc * T,
                   (8 * nc + att) * kBf16,
                   [=] { return std::make_unique<Attention>(B, T, C, NH, false); });
}

KernelCase attention_backward_case(int B, int T, int C, int NH) {
  const double nc = static_cast<double>(B) * T * C, att = static_cast<double>(B) * NH * T * T;
  return make_case("attention_backward", {{"B", B}, {"T", T}, {"C", C}, {"NH", NH}}, "", 5 * nc * T,
                   (12 * nc + 2 * att) * kBf16,
                   [=] { return std::make_unique<Attention>(B, T, C, NH, true); });
}

}  // namespace btm::cuda::cases

// encoder.cpp: the kernel cases of the embeddings (kernels/encoder.cu) against cpu::encoder_*:
// the forward, and the backward's two launches (the token gradient by TokenBuckets, the
// position gradient over the batch) accumulating into gradients that start non-zero.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "btm/cpu/kernels/encoder.hpp"
#include "ops.hpp"

namespace btm::cuda::cases {
namespace {

class EncoderForward final : public Run {
 public:
  EncoderForward(int B, int T, int C, int V) : B_(B), T_(T), C_(C) {
    wte_ = random_bf16_values(static_cast<std::size_t>(V) * C, 1.0f, 1);
    wpe_ = random_bf16_values(static_cast<std::size_t>(T) * C, 1.0f, 2);
    tokens_ = random_tokens(static_cast<std::size_t>(B) * T, V, 3);
    d_wte_ = to_device_bf16(wte_);
    d_wpe_ = to_device_bf16(wpe_);
    d_tokens_ = to_device(tokens_);
    d_out_ = poisoned<bf16>(size());
    output("out", d_out_, size());
  }
  void run(cudaStream_t stream) override {
    encoder_forward(d_out_.get(), d_tokens_.get(), d_wte_.get(), d_wpe_.get(), B_, T_, C_, stream);
  }
  void check(CaseJudge& judge) override {
    std::vector<float> want(size());
    cpu::encoder_forward(want.data(), tokens_.data(), wte_.data(), wpe_.data(), B_, T_, C_);
    judge.compare("out", from_device_bf16(d_out_, size()), want);
  }

 private:
  std::size_t size() const { return static_cast<std::size_t>(B_) * T_ * C_; }
  int B_, T_, C_;
  std::vector<float> wte_, wpe_;
  std::vector<std::int32_t> tokens_;
  DeviceArray<bf16> d_wte_, d_wpe_, d_out_;
  DeviceArray<std::int32_t> d_tokens_;
};

class EncoderBackward final : public Run {
 public:
  EncoderBackward(int B, int T, int C, int V) : B_(B), T_(T), C_(C) {
    const std::size_t BT = static_cast<std::size_t>(B) * T;
    dout_ = random_bf16_values(BT * C, 1.0f, 4);
    tokens_ = random_tokens(BT, V, 5);
    old_wte_ = random_floats(static_cast<std::size_t>(V) * C, -1, 1, 6);  // gradients accumulate
    old_wpe_ = random_floats(static_cast<std::size_t>(T) * C, -1, 1, 7);
    buckets_.build(tokens_.data(), tokens_.size(), V);
    d_dout_ = to_device_bf16(dout_);
    d_bucket_tokens_ = to_device(buckets_.tokens);
    d_bucket_offsets_ = to_device(buckets_.offsets);
    d_positions_ = to_device(buckets_.positions);
    d_wte_ = to_device(old_wte_);
    d_wpe_ = to_device(old_wpe_);
    restored("dwte", d_wte_, old_wte_);
    restored("dwpe", d_wpe_, old_wpe_);
  }
  void run(cudaStream_t stream) override {
    encoder_backward_wte(d_wte_.get(), d_dout_.get(), d_bucket_tokens_.get(),
                         d_bucket_offsets_.get(), d_positions_.get(),
                         static_cast<int>(buckets_.tokens.size()), C_, stream);
    encoder_backward_wpe(d_wpe_.get(), d_dout_.get(), B_, T_, C_, stream);
  }
  void check(CaseJudge& judge) override {
    judge.expect("buckets: one offset per bucket and one more",
                 buckets_.offsets.size() == buckets_.tokens.size() + 1);
    judge.expect("buckets: every position in one",
                 static_cast<std::size_t>(buckets_.offsets.back()) == tokens_.size());
    auto want_wte = old_wte_, want_wpe = old_wpe_;
    cpu::encoder_backward(want_wte.data(), want_wpe.data(), dout_.data(), tokens_.data(), B_, T_,
                          C_);
    judge.compare("dwte", from_device(d_wte_, want_wte.size()), want_wte);
    judge.compare("dwpe", from_device(d_wpe_, want_wpe.size()), want_wpe);
  }

 private:
  int B_, T_, C_;
  std::vector<float> dout_, old_wte_, old_wpe_;
  std::vector<std::int32_t> tokens_;
  TokenBuckets buckets_;
  DeviceArray<bf16> d_dout_;
  DeviceArray<std::int32_t> d_bucket_tokens_, d_bucket_offsets_, d_positions_;
  DeviceArray<float> d_wte_, d_wpe_;
};

}  // namespace

// Bytes: the tokens, each token's and position's row as gathered, the output written.
KernelCase encoder_forward_case(int B, int T, int C, int V) {
  const double rows = static_cast<double>(B) * T;
  return make_case("encoder_forward", {{"B", B}, {"T", T}, {"C", C}, {"V", V}}, "", rows * C,
                   rows * kI32 + 3 * rows * C * kBf16,
                   [=] { return std::make_unique<EncoderForward>(B, T, C, V); });
}

// Bytes: dout read twice (by token and by position), the touched token rows and the position
// rows read and written (fp32), the buckets.
KernelCase encoder_backward_case(int B, int T, int C, int V) {
  const double rows = static_cast<double>(B) * T;
  const double touched = std::min(rows, static_cast<double>(V));
  return make_case("encoder_backward", {{"B", B}, {"T", T}, {"C", C}, {"V", V}}, "", 2 * rows * C,
                   2 * rows * C * kBf16 + 2 * (touched + T) * C * kF32 + 3 * rows * kI32,
                   [=] { return std::make_unique<EncoderBackward>(B, T, C, V); });
}

}  // namespace btm::cuda::cases

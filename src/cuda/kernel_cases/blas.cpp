// blas.cpp: the kernel cases of the linear layers' cuBLASLt GEMMs (kernels/blas.cpp) against
// cpu::matmul_* (and cpu::gelu_*, cpu::residual_forward): the forward with and without a bias,
// with the residual as the GEMM's C, with an fp32 output, with the GELU epilogue; the backward
// (input and weight gradients and the bias gradient, as a layer's backward runs them) and the
// input gradient through the GELU epilogue.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "btm/cpu/kernels/gelu.hpp"
#include "btm/cpu/kernels/matmul.hpp"
#include "btm/cpu/kernels/residual.hpp"
#include "ops.hpp"

namespace btm::cuda::cases {
namespace {

// inp[N, IC], w[OC, IC], bias[OC] (seeds of the linear tests) on the host and the device.
struct LinearInputs {
  LinearInputs(int N, int IC, int OC, std::uint64_t seed, float w_scale)
      : inp(random_bf16_values(static_cast<std::size_t>(N) * IC, 1.0f, seed)),
        w(random_bf16_values(static_cast<std::size_t>(OC) * IC, w_scale, seed + 1)),
        bias(random_bf16_values(OC, 0.5f, seed + 2)),
        d_inp(to_device_bf16(inp)),
        d_w(to_device_bf16(w)),
        d_bias(to_device_bf16(bias)) {}
  std::vector<float> inp, w, bias;
  DeviceArray<bf16> d_inp, d_w, d_bias;
};

// How the forward's output is formed.
enum class Forward { plain, residual, fp32 };

class LinearForward final : public Run {
 public:
  LinearForward(int N, int IC, int OC, bool bias, Forward form)
      : N_(N), IC_(IC), OC_(OC), bias_(bias), form_(form), in_(N, IC, OC, 22, 0.2f) {
    const std::size_t n = size();
    if (form == Forward::fp32) {
      d_out_f_ = poisoned<float>(n);
      output("out", d_out_f_, n);
    } else {
      d_out_ = poisoned<bf16>(n);
      output("out", d_out_, n);
    }
    if (form == Forward::residual) {
      residual_ = random_bf16_values(n, 2.0f, 30);
      d_residual_ = to_device_bf16(residual_);
      restored_bf16("residual", d_residual_, residual_);  // must stay as it is
    }
  }
  void run(cudaStream_t stream) override {
    const bf16* bias = bias_ ? in_.d_bias.get() : nullptr;
    switch (form_) {
      case Forward::plain:
        blas_.linear_forward(d_out_.get(), in_.d_inp.get(), in_.d_w.get(), bias, N_, IC_, OC_,
                             stream);
        break;
      case Forward::residual:
        blas_.linear_residual_forward(d_out_.get(), d_residual_.get(), in_.d_inp.get(),
                                      in_.d_w.get(), bias, N_, IC_, OC_, stream);
        break;
      case Forward::fp32:
        blas_.linear_forward_float(d_out_f_.get(), in_.d_inp.get(), in_.d_w.get(), N_, IC_, OC_,
                                   stream);
        break;
    }
  }
  void check(CaseJudge& judge) override {
    const std::size_t n = size();
    std::vector<float> want(n);
    cpu::matmul_forward(want.data(), in_.inp.data(), in_.w.data(),
                        bias_ ? in_.bias.data() : nullptr, N_, IC_, OC_);
    if (form_ == Forward::fp32) {
      judge.compare("out", from_device(d_out_f_, n), want);
      return;
    }
    if (form_ == Forward::residual) {
      std::vector<float> sum(n);
      cpu::residual_forward(sum.data(), residual_.data(), want.data(), n);
      want = std::move(sum);
      judge.compare("residual", from_device_bf16(d_residual_, n), residual_);
    }
    judge.compare("out", from_device_bf16(d_out_, n), want);
  }

 private:
  std::size_t size() const { return static_cast<std::size_t>(N_) * OC_; }
  int N_, IC_, OC_;
  bool bias_;
  Forward form_;
  Blas blas_;
  LinearInputs in_;
  std::vector<float> residual_;
  DeviceArray<bf16> d_out_, d_residual_;
  DeviceArray<float> d_out_f_;
};

// dinp = dout @ w, dw += dout^T @ inp, dbias += column sums of dout.
class LinearBackward final : public Run {
 public:
  LinearBackward(int N, int IC, int OC) : N_(N), IC_(IC), OC_(OC) {
    inp_ = random_bf16_values(static_cast<std::size_t>(N) * IC, 1.0f, 25);
    w_ = random_bf16_values(static_cast<std::size_t>(OC) * IC, 0.2f, 26);
    dout_ = random_bf16_values(static_cast<std::size_t>(N) * OC, 1.0f, 27);
    old_dw_ = random_floats(static_cast<std::size_t>(OC) * IC, -1, 1, 28);
    old_db_ = random_floats(OC, -1, 1, 29);
    d_inp_ = to_device_bf16(inp_);
    d_w_ = to_device_bf16(w_);
    d_dout_ = to_device_bf16(dout_);
    d_dinp_ = poisoned<bf16>(inp_.size());
    d_dw_ = to_device(old_dw_);
    d_db_ = to_device(old_db_);
    d_scratch_ = poisoned<float>(bias_backward_scratch_floats(OC));
    output("dinp", d_dinp_, inp_.size());
    restored("dw", d_dw_, old_dw_);
    restored("dbias", d_db_, old_db_);
    output("scratch", d_scratch_, bias_backward_scratch_floats(OC));
  }
  void run(cudaStream_t stream) override {
    blas_.linear_backward_input(d_dinp_.get(), d_dout_.get(), d_w_.get(), N_, IC_, OC_, stream);
    blas_.linear_backward_weight(d_dw_.get(), d_dout_.get(), d_inp_.get(), N_, IC_, OC_, stream);
    bias_backward(d_db_.get(), d_scratch_.get(), d_dout_.get(), N_, OC_, stream);
  }
  void check(CaseJudge& judge) override {
    auto want_dw = old_dw_, want_db = old_db_;
    std::vector<float> want_dinp(inp_.size());
    cpu::matmul_backward(want_dinp.data(), want_dw.data(), want_db.data(), dout_.data(),
                         inp_.data(), w_.data(), N_, IC_, OC_);
    judge.compare("dinp", from_device_bf16(d_dinp_, want_dinp.size()), want_dinp);
    judge.compare("dw", from_device(d_dw_, want_dw.size()), want_dw);
    judge.compare("dbias", from_device(d_db_, want_db.size()), want_db);
  }

 private:
  int N_, IC_, OC_;
  Blas blas_;
  std::vector<float> inp_, w_, dout_, old_dw_, old_db_;
  DeviceArray<bf16> d_inp_, d_w_, d_dout_, d_dinp_;
  DeviceArray<float> d_dw_, d_db_, d_scratch_;
};

// The MLP's fc layer with the GELU in the GEMM's epilogue against the CPU's matmul + gelu;
// keep_pre: the pre-GELU values written too (training), else not (inference).
class LinearGeluForward final : public Run {
 public:
  LinearGeluForward(int N, int IC, int OC, bool keep_pre)
      : N_(N), IC_(IC), OC_(OC), keep_pre_(keep_pre) {
    inp_ = random_bf16_values(static_cast<std::size_t>(N) * IC, 1.0f, 44);
    w_ = random_bf16_values(static_cast<std::size_t>(OC) * IC, 0.3f, 45);
    bias_ = random_bf16_values(OC, 0.5f, 46);
    d_inp_ = to_device_bf16(inp_);
    d_w_ = to_device_bf16(w_);
    d_bias_ = to_device_bf16(bias_);
    d_out_ = poisoned<bf16>(size());
    output("out", d_out_, size());
    if (keep_pre) {
      d_pre_ = poisoned<bf16>(size());
      output("pre", d_pre_, size());
    }
  }
  void run(cudaStream_t stream) override {
    blas_.linear_gelu_forward(d_out_.get(), keep_pre_ ? d_pre_.get() : nullptr, d_inp_.get(),
                              d_w_.get(), d_bias_.get(), N_, IC_, OC_, stream);
  }
  void check(CaseJudge& judge) override {
    judge.expect("the epilogue takes the pre-GELU matrix",
                 !keep_pre_ || Blas::gelu_epilogue_supported(d_pre_.get(), OC_));
    std::vector<float> pre(size()), out(size());
    cpu::matmul_forward(pre.data(), inp_.data(), w_.data(), bias_.data(), N_, IC_, OC_);
    cpu::gelu_forward(out.data(), pre.data(), size());
    if (keep_pre_) judge.compare("pre", from_device_bf16(d_pre_, size()), pre);
    judge.compare("out", from_device_bf16(d_out_, size()), out);
  }

 private:
  std::size_t size() const { return static_cast<std::size_t>(N_) * OC_; }
  int N_, IC_, OC_;
  bool keep_pre_;
  Blas blas_;
  std::vector<float> inp_, w_, bias_;
  DeviceArray<bf16> d_inp_, d_w_, d_bias_, d_out_, d_pre_;
};

// dpre[N, IC] = (dout[N, OC] @ w[OC, IC]) * gelu'(pre) in one GEMM, pre the pre-GELU values a
// GPU fc layer stored (the reference takes them rounded so), against the CPU's matmul backward
// and gelu backward, and against the unfused kernels (linear_backward_input, gelu_backward).
class LinearBackwardInputDgelu final : public Run {
 public:
  LinearBackwardInputDgelu(int N, int IC, int OC) : N_(N), IC_(IC), OC_(OC) {
    // The fc layer [N, OC] -> [N, IC] whose output is pre: inp [N, OC], w_fc [IC, OC].
    const auto inp = random_bf16_values(static_cast<std::size_t>(N) * OC, 1.0f, 44);
    const auto w_fc = random_bf16_values(static_cast<std::size_t>(IC) * OC, 0.3f, 45);
    const auto bias = random_bf16_values(IC, 0.5f, 46);
    w_ = random_bf16_values(static_cast<std::size_t>(OC) * IC, 0.2f, 47);
    dout_ = random_bf16_values(static_cast<std::size_t>(N) * OC, 1.0f, 48);
    auto d_inp = to_device_bf16(inp), d_w_fc = to_device_bf16(w_fc), d_bias = to_device_bf16(bias);
    d_pre_ = poisoned<bf16>(size());
    auto d_out = poisoned<bf16>(size());
    blas_.linear_gelu_forward(d_out.get(), d_pre_.get(), d_inp.get(), d_w_fc.get(), d_bias.get(), N,
                              OC, IC, nullptr);
    pre_ = from_device_bf16(d_pre_, size());
    d_w_ = to_device_bf16(w_);
    d_dout_ = to_device_bf16(dout_);
    d_dpre_ = poisoned<bf16>(size());
    output("dpre", d_dpre_, size());
  }
  void run(cudaStream_t stream) override {
    blas_.linear_backward_input_dgelu(d_dpre_.get(), d_dout_.get(), d_w_.get(), d_pre_.get(), N_,
                                      IC_, OC_, stream);
  }
  void check(CaseJudge& judge) override {
    judge.expect("the epilogue takes the pre-GELU matrix",
                 Blas::gelu_epilogue_supported(d_pre_.get(), IC_));
    std::vector<float> dh(size()), dw(static_cast<std::size_t>(OC_) * IC_), want(size());
    cpu::matmul_backward(dh.data(), dw.data(), nullptr, dout_.data(), pre_.data(), w_.data(), N_,
                         IC_, OC_);
    cpu::gelu_backward(want.data(), pre_.data(), dh.data(), size());
    const auto got = from_device_bf16(d_dpre_, size());
    judge.compare("dpre", got, want);
    auto d_unfused = poisoned<bf16>(size());
    blas_.linear_backward_input(d_unfused.get(), d_dout_.get(), d_w_.get(), N_, IC_, OC_, nullptr);
    gelu_backward(d_unfused.get(), d_pre_.get(), d_unfused.get(), size(), nullptr);
    judge.compare("dpre (= unfused kernels)", from_device_bf16(d_unfused, size()), got);
  }

 private:
  std::size_t size() const { return static_cast<std::size_t>(N_) * IC_; }
  int N_, IC_, OC_;
  Blas blas_;
  std::vector<float> w_, dout_, pre_;
  DeviceArray<bf16> d_w_, d_dout_, d_pre_, d_dpre_;
};

std::vector<std::pair<std::string, long long>> dims(int N, int IC, int OC) {
  return {{"N", N}, {"IC", IC}, {"OC", OC}};
}

}  // namespace

// A GEMM of [N, IC] by [IC, OC]: 2 N IC OC FLOPs; bytes: the operands read and the output
// written once.
KernelCase linear_forward_case(int N, int IC, int OC, bool bias) {
  const double n = N, ic = IC, oc = OC;
  return make_case("linear_forward", dims(N, IC, OC), bias ? "bias" : "", 2 * n * ic * oc,
                   (n * ic + oc * ic + n * oc + (bias ? oc : 0)) * kBf16, [=] {
                     return std::make_unique<LinearForward>(N, IC, OC, bias, Forward::plain);
                   });
}

KernelCase linear_residual_forward_case(int N, int IC, int OC, bool bias) {
  const double n = N, ic = IC, oc = OC;
  return make_case(
      "linear_residual_forward", dims(N, IC, OC), bias ? "bias" : "", 2 * n * ic * oc + n * oc,
      (n * ic + oc * ic + 2 * n * oc + (bias ? oc : 0)) * kBf16,
      [=] { return std::make_unique<LinearForward>(N, IC, OC, bias, Forward::residual); });
}

KernelCase linear_forward_float_case(int N, int IC, int OC) {
  const double n = N, ic = IC, oc = OC;
  return make_case("linear_forward_float", dims(N, IC, OC), "", 2 * n * ic * oc,
                   (n * ic + oc * ic) * kBf16 + n * oc * kF32, [=] {
                     return std::make_unique<LinearForward>(N, IC, OC, false, Forward::fp32);
                   });
}

// Two GEMMs and the column sums: dinp (bf16) written, dw (fp32) read and written, dout read
// by all three.
KernelCase linear_backward_case(int N, int IC, int OC) {
  const double n = N, ic = IC, oc = OC;
  return make_case("linear_backward", dims(N, IC, OC), "", 4 * n * ic * oc + n * oc,
                   (3 * n * oc + 2 * n * ic + oc * ic) * kBf16 + 2 * (oc * ic + oc) * kF32,
                   [=] { return std::make_unique<LinearBackward>(N, IC, OC); });
}

KernelCase linear_gelu_forward_case(int N, int IC, int OC, bool keep_pre) {
  const double n = N, ic = IC, oc = OC;
  return make_case("linear_gelu_forward", dims(N, IC, OC), keep_pre ? "keep_pre" : "inference",
                   2 * n * ic * oc + 10 * n * oc,
                   (n * ic + oc * ic + oc + (keep_pre ? 2 : 1) * n * oc) * kBf16,
                   [=] { return std::make_unique<LinearGeluForward>(N, IC, OC, keep_pre); });
}

KernelCase linear_backward_input_dgelu_case(int N, int IC, int OC) {
  const double n = N, ic = IC, oc = OC;
  return make_case("linear_backward_input_dgelu", dims(N, IC, OC), "",
                   2 * n * ic * oc + 12 * n * ic, (n * oc + oc * ic + 2 * n * ic) * kBf16,
                   [=] { return std::make_unique<LinearBackwardInputDgelu>(N, IC, OC); });
}

}  // namespace btm::cuda::cases

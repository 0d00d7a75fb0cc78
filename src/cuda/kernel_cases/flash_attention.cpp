// flash_attention.cpp: the kernel cases of the fused causal attention (kernels/flash_attention.cu
// and, on Hopper, kernels/flash_attention_sm90.cu), both implementations, against
// cpu::attention_*: the output, the rows' log2-sum-exp against the CPU's scores (in double), and
// the backward's dqkv from the GPU forward's output and log2-sum-exp.
#include <cmath>
#include <cstddef>
#include <vector>

#include "btm/cpu/kernels/attention.hpp"
#include "ops.hpp"

namespace btm::cuda::cases {
namespace {

class FlashAttention final : public Run {
 public:
  FlashAttention(int B, int T, int C, int NH, FlashKernels kernels, bool backward)
      : B_(B), T_(T), C_(C), NH_(NH), kernels_(kernels), backward_(backward) {
    qkv_ = random_bf16_values(3 * nc(), 1.0f, 42);
    dout_ = random_bf16_values(nc(), 1.0f, 43);
    d_qkv_ = to_device_bf16(qkv_);
    d_out_ = poisoned<bf16>(nc());
    d_lse_ = poisoned<float>(rows());
    if (!backward) {
      output("out", d_out_, nc());
      output("lse", d_lse_, rows());
      return;
    }
    flash_attention_forward(d_out_.get(), d_lse_.get(), d_qkv_.get(), B, T, C, NH, nullptr,
                            kernels);
    d_dout_ = to_device_bf16(dout_);
    d_dqkv_ = poisoned<bf16>(3 * nc());
    d_dvec_ = poisoned<float>(rows());
    output("dqkv", d_dqkv_, 3 * nc());
    output("dvec", d_dvec_, rows());
  }
  void run(cudaStream_t stream) override {
    if (backward_)
      flash_attention_backward(d_dqkv_.get(), d_dvec_.get(), d_dout_.get(), d_qkv_.get(),
                               d_out_.get(), d_lse_.get(), B_, T_, C_, NH_, stream, kernels_);
    else
      flash_attention_forward(d_out_.get(), d_lse_.get(), d_qkv_.get(), B_, T_, C_, NH_, stream,
                              kernels_);
  }
  void check(CaseJudge& judge) override {
    judge.expect("head dimension supported", flash_attention_supported(C_ / NH_));
    std::vector<float> want(nc()), att(static_cast<std::size_t>(B_) * NH_ * T_ * T_);
    cpu::attention_forward(want.data(), att.data(), qkv_.data(), B_, T_, C_, NH_);
    if (backward_) {
      std::vector<float> want_dqkv(3 * nc());
      cpu::attention_backward(want_dqkv.data(), dout_.data(), qkv_.data(), att.data(), B_, T_, C_,
                              NH_);
      judge.compare("dqkv", from_device_bf16(d_dqkv_, 3 * nc()), want_dqkv);
      return;
    }
    judge.compare("out", from_device_bf16(d_out_, nc()), want);
    judge.compare("lse", from_device(d_lse_, rows()), log2_sum_exp());
  }

 private:
  // log2(sum_{j <= t} exp(q_t . k_j / sqrt(hs))) per (b, h, t), in double.
  std::vector<float> log2_sum_exp() const {
    const int hs = C_ / NH_;
    std::vector<float> lse(rows());
    for (int b = 0; b < B_; ++b)
      for (int h = 0; h < NH_; ++h)
        for (int t = 0; t < T_; ++t) {
          const float* q = qkv_.data() + (static_cast<std::size_t>(b) * T_ + t) * 3 * C_ + h * hs;
          double sum = 0;
          for (int j = 0; j <= t; ++j) {
            const float* k =
                qkv_.data() + (static_cast<std::size_t>(b) * T_ + j) * 3 * C_ + C_ + h * hs;
            double dot = 0;
            for (int d = 0; d < hs; ++d) dot += static_cast<double>(q[d]) * k[d];
            sum += std::exp(dot / std::sqrt(static_cast<double>(hs)));
          }
          lse[(static_cast<std::size_t>(b) * NH_ + h) * T_ + t] =
              static_cast<float>(std::log2(sum));
        }
    return lse;
  }
  std::size_t nc() const { return static_cast<std::size_t>(B_) * T_ * C_; }
  std::size_t rows() const { return static_cast<std::size_t>(B_) * NH_ * T_; }
  int B_, T_, C_, NH_;
  FlashKernels kernels_;
  bool backward_;
  std::vector<float> qkv_, dout_;
  DeviceArray<bf16> d_qkv_, d_out_, d_dout_, d_dqkv_;
  DeviceArray<float> d_lse_, d_dvec_;
};

std::string wgmma_unavailable() {
  return flash_wgmma_available()
             ? std::string()
             : "no sm_90a build or no compute capability 9.0 GPU: the wgmma kernels do not run";
}

KernelCase flash_case(const char* op, int B, int T, int C, int NH, FlashKernels kernels,
                      bool backward) {
  const double nc = static_cast<double>(B) * T * C, rows = static_cast<double>(B) * NH * T;
  const bool wgmma = kernels == FlashKernels::wgmma;
  // FLOPs: 4 B T^2 C / 2 (causal) forward, 2.5 times that backward. Bytes: qkv and out (and
  // dout, dqkv) once, the log2-sum-exp (and the row dots).
  KernelCase c =
      make_case(op, {{"B", B}, {"T", T}, {"C", C}, {"NH", NH}}, wgmma ? "wgmma" : "mma_sync",
                (backward ? 5 : 2) * nc * T,
                backward ? 9 * nc * kBf16 + 2 * rows * kF32 : 4 * nc * kBf16 + rows * kF32,
                [=] { return std::make_unique<FlashAttention>(B, T, C, NH, kernels, backward); });
  if (wgmma) c.unavailable = wgmma_unavailable;
  return c;
}

}  // namespace

KernelCase flash_attention_forward_case(int B, int T, int C, int NH, FlashKernels kernels) {
  return flash_case("flash_attention_forward", B, T, C, NH, kernels, false);
}

KernelCase flash_attention_backward_case(int B, int T, int C, int NH, FlashKernels kernels) {
  return flash_case("flash_attention_backward", B, T, C, NH, kernels, true);
}

}  // namespace btm::cuda::cases

// kv_attention.cpp: the kernel cases of attention over the key/value cache
// (kernels/kv_attention.cu) against cpu::kv_attention_forward: the output, and the caches after
// the new keys and values went in (bitwise: copies), from a cache already holding pos positions.
#include <cstddef>
#include <vector>

#include "btm/cpu/kernels/kv_attention.hpp"
#include "ops.hpp"

namespace btm::cuda::cases {
namespace {

class KvAttention final : public Run {
 public:
  KvAttention(int B, int n, int pos, int cap, int C, int NH)
      : B_(B), n_(n), pos_(pos), cap_(cap), C_(C), NH_(NH) {
    qkv_ = random_bf16_values(3 * rows() * C, 1.0f, 51);
    k_ = random_bf16_values(cache(), 1.0f, 52);
    v_ = random_bf16_values(cache(), 1.0f, 53);
    d_qkv_ = to_device_bf16(qkv_);
    d_k_ = to_device_bf16(k_);
    d_v_ = to_device_bf16(v_);
    d_out_ = poisoned<bf16>(rows() * C);
    output("out", d_out_, rows() * C);
    restored_bf16("k_cache", d_k_, k_);
    restored_bf16("v_cache", d_v_, v_);
  }
  void run(cudaStream_t stream) override {
    kv_attention_forward(d_out_.get(), d_k_.get(), d_v_.get(), d_qkv_.get(), B_, n_, pos_, cap_, C_,
                         NH_, stream);
  }
  void check(CaseJudge& judge) override {
    std::vector<float> out(rows() * C_), k = k_, v = v_;
    cpu::kv_attention_forward(out.data(), k.data(), v.data(), qkv_.data(), B_, n_, pos_, cap_, C_,
                              NH_);
    judge.compare("out", from_device_bf16(d_out_, out.size()), out);
    judge.compare("k_cache", from_device_bf16(d_k_, k.size()), k);
    judge.compare("v_cache", from_device_bf16(d_v_, v.size()), v);
  }

 private:
  std::size_t rows() const { return static_cast<std::size_t>(B_) * n_; }
  std::size_t cache() const { return static_cast<std::size_t>(B_) * cap_ * C_; }
  int B_, n_, pos_, cap_, C_, NH_;
  std::vector<float> qkv_, k_, v_;
  DeviceArray<bf16> d_qkv_, d_k_, d_v_, d_out_;
};

}  // namespace

KernelCase kv_attention_forward_case(int B, int n, int pos, int cap, int C, int NH) {
  const double rows = static_cast<double>(B) * n;
  const double keys = pos + (n + 1) / 2.0;  // mean keys per query
  // FLOPs: scores and output, 2 * 2 * keys * C per query. Bytes: the new q, k, v and output, the
  // cache's keys and values read once per query (the blocks of a head share them in L2).
  return make_case("kv_attention_forward",
                   {{"B", B}, {"n", n}, {"pos", pos}, {"cap", cap}, {"C", C}, {"NH", NH}}, "",
                   4 * rows * keys * C,
                   (4 * rows * C + 2 * static_cast<double>(B) * (pos + n) * C) * kBf16,
                   [=] { return std::make_unique<KvAttention>(B, n, pos, cap, C, NH); });
}

}  // namespace btm::cuda::cases

// ops.hpp: the kernel cases' ops (src/cuda/kernel_cases/OP.cpp), one factory per launcher or
// group of launchers run together: given a shape, the KernelCase without its tolerances (the
// table in kernel_cases.cpp adds them), with its FLOPs and bytes and the setup that draws the
// inputs. And the base of their runs, which lists the buffers a run writes once, for reset()
// and written(). Internal to src/cuda.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "btm/cuda/case_data.hpp"
#include "btm/cuda/kernel_cases.hpp"
#include "btm/cuda/kernels.hpp"
#include "btm/cuda/memory.hpp"

namespace btm::cuda::cases {

// A KernelCase named op_<dim><value>..._<variant>.
KernelCase make_case(std::string op, std::vector<std::pair<std::string, long long>> shape,
                     std::string variant, double flops, double bytes,
                     std::function<std::unique_ptr<CaseRun>()> setup);

// bf16 and fp32 element sizes, for the byte counts.
constexpr double kBf16 = 2, kF32 = 4, kF64 = 8, kI32 = 4, kI64 = 8;

// The buffers a run writes, each listed once with what reset() puts back: poison (0xFF bytes),
// or a copy of its starting contents.
class Run : public CaseRun {
 public:
  void reset() override;
  std::vector<std::pair<std::string, std::vector<std::byte>>> written() const override;

 protected:
  // Poisoned at reset().
  template <typename T>
  void output(std::string name, DeviceArray<T>& d, std::size_t n) {
    buffers_.push_back({std::move(name), d.get(), n * sizeof(T), {}});
  }
  // Reset to `start` (n = start.size() elements).
  template <typename T>
  void restored(std::string name, DeviceArray<T>& d, const std::vector<T>& start) {
    std::vector<std::byte> bytes(start.size() * sizeof(T));
    std::memcpy(bytes.data(), start.data(), bytes.size());
    buffers_.push_back({std::move(name), d.get(), bytes.size(), std::move(bytes)});
  }
  void restored_bf16(std::string name, DeviceArray<bf16>& d, const std::vector<float>& start) {
    restored(std::move(name), d, to_bf16(start));
  }

 private:
  struct Buffer {
    std::string name;
    void* device;
    std::size_t bytes;
    std::vector<std::byte> start;  // empty: poison
  };
  std::vector<Buffer> buffers_;
};

// ---- the ops (kernel_cases/OP.cpp) ------------------------------------------------------
KernelCase float_to_bf16_case(std::size_t n);
KernelCase bf16_to_float_case(std::size_t n);
KernelCase mean_of_case(int n);
KernelCase sum_of_squares_case(std::size_t n);

KernelCase encoder_forward_case(int B, int T, int C, int V);
KernelCase encoder_backward_case(int B, int T, int C, int V);

KernelCase layernorm_forward_case(int N, int C);
KernelCase layernorm_backward_case(int N, int C, bool accumulate);

KernelCase linear_forward_case(int N, int IC, int OC, bool bias);
KernelCase linear_residual_forward_case(int N, int IC, int OC, bool bias);
KernelCase linear_forward_float_case(int N, int IC, int OC);
// linear_backward_input + linear_backward_weight + bias_backward: a linear layer's backward.
KernelCase linear_backward_case(int N, int IC, int OC);
KernelCase bias_backward_case(int N, int OC, int offset);
// out = gelu(inp @ w^T + bias) in one GEMM; keep_pre: the pre-GELU values written too.
KernelCase linear_gelu_forward_case(int N, int IC, int OC, bool keep_pre);
// dpre = (dout @ w) * gelu'(pre) in one GEMM.
KernelCase linear_backward_input_dgelu_case(int N, int IC, int OC);

KernelCase gelu_forward_case(std::size_t n);
KernelCase gelu_backward_case(std::size_t n);  // in place, as the engine runs it

KernelCase heads_split_case(int B, int T, int NH, int hs);
KernelCase heads_merge_case(int B, int T, int NH, int hs);
KernelCase attention_forward_case(int B, int T, int C, int NH);
KernelCase attention_backward_case(int B, int T, int C, int NH);
KernelCase flash_attention_forward_case(int B, int T, int C, int NH, FlashKernels kernels);
KernelCase flash_attention_backward_case(int B, int T, int C, int NH, FlashKernels kernels);
// n new positions per sequence after pos cached ones, in a cache of cap positions.
KernelCase kv_attention_forward_case(int B, int n, int pos, int cap, int C, int NH);

// How the training cross-entropy runs: the loss alone, or with the gradient written over the
// logits (the engine's way; it also checks the out-of-place and loss-only runs give its bits).
enum class CrossEntropyRun { loss_only, in_place };
KernelCase crossentropy_forward_backward_case(int N, int V, int Vp, CrossEntropyRun mode);
KernelCase crossentropy_forward_case(int N, int V, int Vp);  // fp32 logits, no gradient

// Three tensors of `sizes` (decayed, not, decayed); vector: the float4 path.
KernelCase adamw_update_case(std::vector<std::size_t> sizes, bool vector);
// sum_of_squares + adamw_update on a gradient holding `bad` (NaN or inf): nothing changes.
KernelCase adamw_skip_case(std::vector<std::size_t> sizes, bool vector, float bad, float grad_clip);

KernelCase fixed_accumulate_case(std::size_t n, std::size_t offset);
enum class FixedCount { none, zero, positive };
// The exact sums (formed on the host) back to floats, from `offset` into the sum array.
KernelCase fixed_to_floats_case(std::size_t n, std::size_t offset, FixedCount count);
KernelCase fixed_weighted_sum_case(int K, std::size_t n, double divisor);
KernelCase fixed_weighted_add_case(int K, std::size_t n);

}  // namespace btm::cuda::cases

// kernel_cases.cpp: the table of kernel cases (cuda/kernel_cases.hpp) and its driver: the
// judge of outputs against tolerances, the check of a case (run twice bitwise, then against the
// CPU reference), its timing and its JSON line. The ops, their inputs, references and FLOP and
// byte counts are in kernel_cases/OP.cpp.
#include "btm/cuda/kernel_cases.hpp"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <ostream>
#include <sstream>
#include <stdexcept>

#include "btm/cuda/check.hpp"
#include "btm/util/error.hpp"
#include "btm/util/json_line.hpp"
#include "kernel_cases/ops.hpp"

namespace btm::cuda {

std::string to_string(const Tolerance& t) {
  std::ostringstream s;
  switch (t.kind) {
    case Tolerance::Kind::close:
      s << "max-norm <= " << t.max_norm << ", rel L2 <= " << t.rel_l2;
      break;
    case Tolerance::Kind::absolute:
      s << "max |error| <= " << t.max_norm;
      break;
    case Tolerance::Kind::bits:
      s << "bitwise equal";
      break;
  }
  return s.str();
}

std::string KernelCase::shape_text() const {
  std::string s;
  for (const auto& [dim, value] : shape)
    s += (s.empty() ? "" : " ") + dim + "=" + std::to_string(value);
  return s;
}

// ---- the judge --------------------------------------------------------------------------

CaseJudge::CaseJudge(const std::vector<std::pair<std::string, Tolerance>>& tolerances)
    : tolerances_(tolerances), used_(tolerances.size(), false) {}

const Tolerance* CaseJudge::find(const std::string& output) {
  for (std::size_t i = 0; i < tolerances_.size(); ++i)
    if (tolerances_[i].first == output) {
      used_[i] = true;
      return &tolerances_[i].second;
    }
  checks_.push_back({output, false, "the table gives no tolerance for this output"});
  return nullptr;
}

namespace {

template <typename T>
std::string element(T x) {
  std::ostringstream s;
  s.precision(std::numeric_limits<T>::max_digits10);
  s << x;
  return s.str();
}

// got against want under t: the measured error and the bound, or the first differing element.
template <typename T>
CaseCheck judge(const std::string& output, const Tolerance& t, std::span<const T> got,
                std::span<const T> want) {
  CaseCheck c{output, false, {}};
  if (got.size() != want.size()) {
    c.detail =
        std::to_string(got.size()) + " elements, the reference has " + std::to_string(want.size());
    return c;
  }
  std::ostringstream d;
  d.precision(3);
  if (t.kind == Tolerance::Kind::bits) {
    const std::size_t i = cases::first_difference(got, want);
    c.passed = i == got.size();
    if (c.passed)
      d << got.size() << " elements bitwise equal";
    else
      d << "element " << i << " of " << got.size() << " is " << element(got[i]) << ", want "
        << element(want[i]) << " (bitwise equal wanted)";
  } else {
    const cases::Errors e = cases::normalised_errors(got, want);
    if (t.kind == Tolerance::Kind::close) {
      c.passed = e.max_norm <= t.max_norm && e.rel_l2 <= t.rel_l2;  // NaN fails
      d << "max-norm " << e.max_norm << " (<= " << t.max_norm << "), rel L2 " << e.rel_l2
        << " (<= " << t.rel_l2 << ")";
    } else {
      c.passed = e.max_abs <= t.max_norm;
      d << "max |error| " << e.max_abs << " (<= " << t.max_norm << ")";
    }
    d << " over " << got.size() << " elements";
  }
  c.detail = d.str();
  return c;
}

}  // namespace

void CaseJudge::compare(const std::string& output, std::span<const float> got,
                        std::span<const float> want) {
  if (const Tolerance* t = find(output)) checks_.push_back(judge(output, *t, got, want));
}

void CaseJudge::compare(const std::string& output, std::span<const double> got,
                        std::span<const double> want) {
  if (const Tolerance* t = find(output)) checks_.push_back(judge(output, *t, got, want));
}

void CaseJudge::compare(const std::string& output, double got, double want) {
  compare(output, std::span<const double>(&got, 1), std::span<const double>(&want, 1));
}

void CaseJudge::compare(const std::string& output, std::span<const std::int64_t> got,
                        std::span<const std::int64_t> want) {
  const Tolerance* t = find(output);
  if (t == nullptr) return;
  if (t->kind != Tolerance::Kind::bits) {
    checks_.push_back({output, false, "integers are compared bitwise: the table says otherwise"});
    return;
  }
  checks_.push_back(judge(output, *t, got, want));
}

void CaseJudge::expect(const std::string& what, bool ok, const std::string& detail) {
  checks_.push_back({what, ok, detail});
}

std::vector<CaseCheck> CaseJudge::finish() {
  for (std::size_t i = 0; i < tolerances_.size(); ++i)
    if (!used_[i])
      checks_.push_back({tolerances_[i].first, false,
                         "the table gives a tolerance for this output but the case never "
                         "compared it"});
  return std::move(checks_);
}

// ---- the runs' buffers ------------------------------------------------------------------

namespace cases {

KernelCase make_case(std::string op, std::vector<std::pair<std::string, long long>> shape,
                     std::string variant, double flops, double bytes,
                     std::function<std::unique_ptr<CaseRun>()> setup) {
  KernelCase c;
  c.name = op;
  for (const auto& [dim, value] : shape) c.name += "_" + dim + std::to_string(value);
  if (!variant.empty()) c.name += "_" + variant;
  c.op = std::move(op);
  c.shape = std::move(shape);
  c.variant = std::move(variant);
  c.flops = flops;
  c.bytes = bytes;
  c.setup = std::move(setup);
  return c;
}

void Run::reset() {
  for (const Buffer& b : buffers_) {
    if (b.start.empty())
      poison(b.device, b.bytes);
    else
      BTM_CUDA_CHECK(cudaMemcpy(b.device, b.start.data(), b.bytes, cudaMemcpyHostToDevice));
  }
  BTM_CUDA_CHECK(cudaDeviceSynchronize());
}

std::vector<std::pair<std::string, std::vector<std::byte>>> Run::written() const {
  BTM_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<std::pair<std::string, std::vector<std::byte>>> out;
  for (const Buffer& b : buffers_) {
    std::vector<std::byte> bytes(b.bytes);
    BTM_CUDA_CHECK(cudaMemcpy(bytes.data(), b.device, b.bytes, cudaMemcpyDeviceToHost));
    out.emplace_back(b.name, std::move(bytes));
  }
  return out;
}

}  // namespace cases

// ---- the table --------------------------------------------------------------------------
// Tolerances (normalised errors: max-norm = max|gpu - cpu| / max|cpu|, rel L2 = ||gpu - cpu|| /
// ||cpu||). Inputs are drawn already rounded to bf16, so the reference sees exactly what the
// kernel sees and the error measured is the kernel's own; one rounding to bf16 costs at most
// 2^-8 = 0.39 % relative.
//   bf16 outputs rounded once                      1e-2   5e-3
//   fp32 sums in another order (gradients +=)      1e-5 .. 1e-4, rel L2 1e-5
//   materialized and flash attention: bf16 scores, probabilities and head outputs (forward
//   3e-2 / 1.5e-2, probabilities 2e-2 / 1e-2), ~6 chained bf16 roundings (backward 5e-2 /
//   2.5e-2); the flash log2-sum-exp within 1e-3
//   cross-entropy losses: __expf and the sum order  1e-4   1e-5
//   sum of squares, mean, AdamW (the same formula, FMA contraction): 1e-6 relative
//   exact: conversions, head split/merge, the bf16 copy of the AdamW parameters, everything
//   left unchanged (a residual input, loss-only logits, a skipped step), the padding of the
//   logits' gradient (exact 0), variants that must agree (in place = out of place), and the
//   fixed-point sums, counts and floats against util/fixed_point.hpp
// Shapes: the edges of each kernel's paths (16-byte packs and scalar, register and fallback
// kernels, partial tiles, rows longer than a block) and, last, the GPT-2 small (124M) shapes of
// a training step at B = 4, T = 1024 (a cross-entropy chunk of 1024 rows), for the benchmark.

namespace {

using cases::CrossEntropyRun;
using cases::FixedCount;
using T = Tolerance;
using Tolerances = std::vector<std::pair<std::string, Tolerance>>;

KernelCase with(KernelCase c, Tolerances tolerances) {
  c.tolerances = std::move(tolerances);
  return c;
}

std::vector<KernelCase> make_table() {
  using namespace cases;
  std::vector<KernelCase> t;
  auto add = [&t](KernelCase c, Tolerances tolerances) {
    t.push_back(with(std::move(c), std::move(tolerances)));
  };
  const T bf16_once = T::close(1e-2, 5e-3);  // a bf16 output rounded once

  // ---- conversions and reductions
  add(float_to_bf16_case(1000003), {{"out", T::bits()}});
  add(bf16_to_float_case(1000003), {{"out", T::bits()}});
  add(mean_of_case(5000), {{"mean", T::close(1e-6, 1e-6)}});
  add(sum_of_squares_case(16448), {{"sum", T::close(1e-6, 1e-6)}});

  // ---- encoder: C = 64 16-byte packs, C = 12 the scalar path; a vocabulary of 7 repeats tokens
  for (int C : {64, 12}) add(encoder_forward_case(3, 17, C, 50), {{"out", T::close(5e-3, 5e-3)}});
  add(encoder_backward_case(4, 9, 24, 7),
      {{"dwte", T::close(1e-5, 1e-5)}, {"dwpe", T::close(1e-5, 1e-5)}});

  // ---- LayerNorm. Backward: C = 64 ... 1600 with 16-byte packs and C = 36, 1004 with single
  // bf16 run the register kernel (1, 3, 7, 2 and 32 packs per lane); C = 2304 and 1100 its
  // shared-memory fallback. N = 9000 rows: more rows than the grid has warps, so warps carry
  // sums over several rows.
  for (int C : {64, 36})
    add(layernorm_forward_case(37, C),
        {{"out", bf16_once}, {"mean", T::close(1e-5, 1e-5)}, {"rstd", T::close(1e-5, 1e-5)}});
  for (int C : {64, 768, 1600, 2304, 36, 1004, 1100})
    for (bool accumulate : {false, true})
      add(layernorm_backward_case(9000, C, accumulate),
          {{"dinp", bf16_once}, {"dw", T::close(1e-4, 1e-5)}, {"db", T::close(1e-4, 1e-5)}});

  // ---- linear layers (cuBLASLt) and the bias gradient
  for (bool bias : {true, false}) {
    add(linear_forward_case(70, 64, 192, bias), {{"out", bf16_once}});
    // the residual as the GEMM's C: out = residual + inp @ w^T (+ bias), rounded once
    add(linear_residual_forward_case(70, 64, 192, bias),
        {{"out", bf16_once}, {"residual", T::bits()}});
  }
  add(linear_forward_float_case(70, 64, 192), {{"out", T::close(1e-4, 1e-5)}});
  for (int N : {70, 3000})  // 3000 rows: several row chunks in the bias gradient
    add(linear_backward_case(N, 96, 64),
        {{"dinp", bf16_once}, {"dw", T::close(1e-4, 1e-5)}, {"dbias", T::close(1e-4, 1e-5)}});
  // OC % 8 == 0 with a 16-byte aligned dout runs the 16-byte kernel (OC = 768: three full
  // blocks of 256 columns; 72: part of one); OC = 36, and OC = 64 with dout 8 bytes off
  // alignment, the scalar one. N = 20011 (prime) is no multiple of the row chunk (at least 32
  // rows; on an H200 ~76 for OC = 768: two unrolled steps of 4 rows per row lane and a tail);
  // N = 5 leaves some row lanes idle.
  for (const auto& [OC, offset] : {std::pair{768, 0}, {72, 0}, {36, 0}, {64, 4}})
    for (int N : {20011, 5})
      add(bias_backward_case(N, OC, offset), {{"dbias", T::close(1e-4, 1e-5)}});
  // The GELU in the GEMM's epilogue (tanh approximation): pre-GELU values and output rounded
  // once each; the inference form (no pre-GELU values kept) may run another cuBLASLt kernel.
  add(linear_gelu_forward_case(70, 64, 256, true), {{"pre", bf16_once}, {"out", bf16_once}});
  add(linear_gelu_forward_case(70, 64, 256, false), {{"out", bf16_once}});
  add(linear_backward_input_dgelu_case(70, 256, 64),
      {{"dpre", bf16_once}, {"dpre (= unfused kernels)", bf16_once}});

  // ---- GELU: n = 4096 16-byte packs, 1003 the scalar path
  for (std::size_t n : {std::size_t{4096}, std::size_t{1003}}) {
    add(gelu_forward_case(n), {{"out", bf16_once}});
    add(gelu_backward_case(n), {{"dinp", bf16_once}});
  }

  // ---- materialized attention: hs 8 (16-byte packs) and 12 (scalar) head split and merge;
  // hs 32, odd T with hs 16, hs 128, GPT-2's T
  for (int hs : {8, 12}) {
    add(heads_split_case(2, 5, 3, hs), {{"out", T::bits()}});
    add(heads_merge_case(2, 5, 3, hs), {{"out", T::bits()}});
  }
  struct Shape {
    int B, T, C, NH;
  };
  for (const Shape s :
       {Shape{2, 64, 64, 2}, Shape{2, 37, 64, 4}, Shape{1, 128, 256, 2}, Shape{1, 1024, 128, 2}}) {
    add(attention_forward_case(s.B, s.T, s.C, s.NH),
        {{"out", T::close(3e-2, 1.5e-2)}, {"att", T::close(2e-2, 1e-2)}});
    add(attention_backward_case(s.B, s.T, s.C, s.NH), {{"dqkv", T::close(5e-2, 2.5e-2)}});
  }
  // ---- flash attention (head dim 64), both implementations: a partial last tile, 4 full
  // tiles, one partial tile, 16 tiles, 2 blocks and a partial one, and GPT-2 small's heads
  // (several blocks per SM at once, as in training: races between them show here)
  for (const Shape s : {Shape{2, 100, 128, 2}, Shape{1, 256, 64, 1}, Shape{3, 17, 192, 3},
                        Shape{1, 1024, 128, 2}, Shape{2, 200, 128, 2}, Shape{2, 1024, 768, 12}})
    for (FlashKernels k : {FlashKernels::mma_sync, FlashKernels::wgmma}) {
      add(flash_attention_forward_case(s.B, s.T, s.C, s.NH, k),
          {{"out", T::close(3e-2, 1.5e-2)}, {"lse", T::absolute(1e-3)}});
      add(flash_attention_backward_case(s.B, s.T, s.C, s.NH, k),
          {{"dqkv", T::close(5e-2, 2.5e-2)}});
    }

  // ---- attention over the key/value cache (decoding): a prompt into an empty cache, one step
  // late in a partly filled one, hs 12 (no power of two), hs 256 (more dimensions than
  // threads), GPT-2 small's heads at batch 32 one step at position 1000
  struct KvShape {
    int B, n, pos, cap, C, NH;
  };
  for (const KvShape s :
       {KvShape{2, 37, 0, 64, 128, 2}, KvShape{3, 1, 50, 64, 128, 2}, KvShape{2, 5, 9, 20, 36, 3},
        KvShape{1, 3, 4, 8, 512, 2}, KvShape{32, 1, 1000, 1024, 768, 12}})
    add(kv_attention_forward_case(s.B, s.n, s.pos, s.cap, s.C, s.NH),
        {{"out", T::close(3e-2, 1.5e-2)}, {"k_cache", T::bits()}, {"v_cache", T::bits()}});

  // ---- cross-entropy. Vp % 8 == 0 runs the register kernel (each row read once): V = 100 of
  // Vp = 128 in one warp, 1 pack per thread, padding from inside a pack through three whole
  // packs; 4000 without padding, 1 pack per thread over 16 warps, the last warp's tail holding
  // no logits; GPT-2's 50257 of 50304, 7 packs per thread. Vp = 60000 is beyond the registers
  // (7 * 1024 packs of 8) and Vp = 101 no multiple of 8: the two-pass kernel with 16-byte packs
  // and with single bf16. fp32 (evaluation): Vp % 4 == 0 runs the 16-byte kernel (with V = 100,
  // threads that hold only padding), Vp = 101 the two-pass kernel. The padded columns hold
  // large logits (they must be ignored); the target entries (~ -dloss) dominate the gradient's
  // norms, so it is also compared without them.
  const Tolerance loss = T::close(1e-4, 1e-5);
  // The three cases of one shape: loss only, in place (with the variants that must agree), and
  // the forward alone.
  const auto add_crossentropy = [&](int N, int V, int Vp) {
    add(crossentropy_forward_backward_case(N, V, Vp, CrossEntropyRun::loss_only),
        {{"losses", loss}, {"logits", T::bits()}});
    add(crossentropy_forward_backward_case(N, V, Vp, CrossEntropyRun::in_place),
        {{"losses", loss},
         {"dlogits", bf16_once},
         {"dlogits without the targets", bf16_once},
         {"dlogits padding", T::bits()},
         {"losses (= loss only)", T::bits()},
         {"losses (= out of place)", T::bits()},
         {"dlogits (= out of place)", T::bits()}});
    add(crossentropy_forward_case(N, V, Vp), {{"losses", loss}});
  };
  for (const auto& [V, Vp] :
       {std::pair{100, 128}, {4000, 4000}, {50257, 50304}, {59995, 60000}, {100, 101}}) {
    add_crossentropy(9, V, Vp);
  }

  // ---- AdamW: three tensors (decayed weight, undecayed bias, decayed weight), clipping active;
  // a non-finite sum of squares (a NaN or infinite gradient) skips the step on the device
  const std::vector<std::size_t> tensors = {4096, 64, 12288};
  const Tolerances adamw = {{"p", T::close(1e-6, 1e-6)},
                            {"m", T::close(1e-6, 1e-6)},
                            {"v", T::close(1e-6, 1e-6)},
                            {"p_bf16", T::bits()}};
  const Tolerances unchanged = {
      {"p", T::bits()}, {"m", T::bits()}, {"v", T::bits()}, {"p_bf16", T::bits()}};
  for (bool vector : {true, false}) {
    add(adamw_update_case(tensors, vector), adamw);
    for (float bad : {NAN, INFINITY})
      for (float grad_clip : {1.0f, 0.0f})
        add(adamw_skip_case(tensors, vector, bad, grad_clip), unchanged);
  }

  // ---- exact fixed-point sums against util/fixed_point.hpp, bit for bit, on edge values (the
  // term limit's neighbours, rounding ties, NaN, +-Inf, subnormals): sizes around and off the
  // block size, at an unaligned start (a layer's range inside the flat vector)
  for (std::size_t n : {std::size_t{1}, std::size_t{255}, std::size_t{257}, std::size_t{100003}})
    for (std::size_t offset : {std::size_t{0}, std::size_t{1}})
      add(fixed_accumulate_case(n, offset), {{"sum", T::bits()},
                                             {"count", T::bits()},
                                             {"g1 (zeroed)", T::bits()},
                                             {"g2 (zeroed)", T::bits()}});
  // to floats: without a count and with a zero one the host's floats; a positive count (a
  // rejected term) NaN everywhere
  for (std::size_t n : {std::size_t{1}, std::size_t{255}, std::size_t{257}, std::size_t{100003}})
    for (std::size_t offset : {std::size_t{0}, std::size_t{1}}) {
      add(fixed_to_floats_case(n, offset, FixedCount::none), {{"out", T::bits()}});
      add(fixed_to_floats_case(n, offset, FixedCount::zero), {{"out", T::bits()}});
      add(fixed_to_floats_case(n, offset, FixedCount::positive), {});
    }
  for (int K : {1, 3, 8})
    for (std::size_t n : {std::size_t{1}, std::size_t{1000}, std::size_t{65537}}) {
      for (double divisor : {1.0, 3.0})
        add(fixed_weighted_sum_case(K, n, divisor), {{"out", T::bits()}, {"count", T::bits()}});
      add(fixed_weighted_add_case(K, n), {{"sum", T::bits()}, {"count", T::bits()}});
    }

  // ---- GPT-2 small (124M) at B = 4, T = 1024: the shapes of a training step, for the benchmark
  const int B = 4, Tn = 1024, C = 768, NH = 12, V = 50257, Vp = 50304, N = B * Tn;
  add(encoder_forward_case(B, Tn, C, Vp), {{"out", T::close(5e-3, 5e-3)}});
  add(encoder_backward_case(B, Tn, C, Vp),
      {{"dwte", T::close(1e-5, 1e-5)}, {"dwpe", T::close(1e-5, 1e-5)}});
  add(layernorm_forward_case(N, C),
      {{"out", bf16_once}, {"mean", T::close(1e-5, 1e-5)}, {"rstd", T::close(1e-5, 1e-5)}});
  add(layernorm_backward_case(N, C, true),
      {{"dinp", bf16_once}, {"dw", T::close(1e-4, 1e-5)}, {"db", T::close(1e-4, 1e-5)}});
  add(linear_forward_case(N, C, 3 * C, true), {{"out", bf16_once}});  // qkv
  add(linear_residual_forward_case(N, C, C, true), {{"out", bf16_once}, {"residual", T::bits()}});
  add(linear_gelu_forward_case(N, C, 4 * C, true), {{"pre", bf16_once}, {"out", bf16_once}});
  add(linear_backward_input_dgelu_case(N, 4 * C, C),
      {{"dpre", bf16_once}, {"dpre (= unfused kernels)", bf16_once}});
  add(linear_backward_case(N, C, 4 * C),
      {{"dinp", bf16_once}, {"dw", T::close(1e-4, 1e-5)}, {"dbias", T::close(1e-4, 1e-5)}});
  add(bias_backward_case(N, 4 * C, 0), {{"dbias", T::close(1e-4, 1e-5)}});
  add(linear_forward_float_case(256, C, Vp), {{"out", T::close(1e-4, 1e-5)}});  // eval logits
  add(gelu_forward_case(static_cast<std::size_t>(N) * 4 * C), {{"out", bf16_once}});
  add(gelu_backward_case(static_cast<std::size_t>(N) * 4 * C), {{"dinp", bf16_once}});
  add(heads_split_case(B, Tn, NH, C / NH), {{"out", T::bits()}});
  add(attention_forward_case(B, Tn, C, NH),
      {{"out", T::close(3e-2, 1.5e-2)}, {"att", T::close(2e-2, 1e-2)}});
  add(attention_backward_case(B, Tn, C, NH), {{"dqkv", T::close(5e-2, 2.5e-2)}});
  for (FlashKernels k : {FlashKernels::mma_sync, FlashKernels::wgmma}) {
    add(flash_attention_forward_case(B, Tn, C, NH, k),
        {{"out", T::close(3e-2, 1.5e-2)}, {"lse", T::absolute(1e-3)}});
    add(flash_attention_backward_case(B, Tn, C, NH, k), {{"dqkv", T::close(5e-2, 2.5e-2)}});
  }
  add_crossentropy(1024, V, Vp);
  add(mean_of_case(N), {{"mean", T::close(1e-6, 1e-6)}});
  const std::size_t half = std::size_t{1} << 23;
  add(sum_of_squares_case(2 * half), {{"sum", T::close(1e-6, 1e-6)}});
  add(adamw_update_case({half, 768, half}, true), adamw);
  add(fixed_accumulate_case(2 * half, 0), {{"sum", T::bits()},
                                           {"count", T::bits()},
                                           {"g1 (zeroed)", T::bits()},
                                           {"g2 (zeroed)", T::bits()}});
  add(fixed_to_floats_case(2 * half, 0, FixedCount::zero), {{"out", T::bits()}});
  add(fixed_weighted_sum_case(8, half / 2, 3.0), {{"out", T::bits()}, {"count", T::bits()}});
  add(float_to_bf16_case(2 * half), {{"out", T::bits()}});
  add(bf16_to_float_case(2 * half), {{"out", T::bits()}});

  return t;
}

}  // namespace

const std::vector<KernelCase>& kernel_cases() {
  static const std::vector<KernelCase> table = make_table();
  return table;
}

// ---- the driver -------------------------------------------------------------------------

std::vector<CaseCheck> check_case(const KernelCase& c) {
  std::unique_ptr<CaseRun> run = c.setup();
  run->reset();
  run->run(nullptr);
  const auto first = run->written();
  run->reset();
  run->run(nullptr);
  const auto second = run->written();
  CaseJudge judge(c.tolerances);
  for (std::size_t i = 0; i < first.size(); ++i) {
    const auto& a = first[i].second;
    const auto& b = second[i].second;
    std::size_t at = 0;
    while (at < a.size() && a[at] == b[at]) ++at;
    judge.expect("run twice: " + first[i].first, at == a.size(),
                 at == a.size() ? std::to_string(a.size()) + " bytes bitwise equal"
                                : "byte " + std::to_string(at) + " of " + std::to_string(a.size()) +
                                      " differs between two runs");
  }
  run->check(judge);
  return judge.finish();
}

double time_case_ms(const KernelCase& c, int warmup, int iterations) {
  if (iterations < 1) throw std::invalid_argument("time_case_ms: iterations must be >= 1");
  std::unique_ptr<CaseRun> run = c.setup();
  run->reset();
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  BTM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  BTM_CUDA_CHECK(cudaEventCreate(&start));
  BTM_CUDA_CHECK(cudaEventCreate(&stop));
  float ms = 0;
  try {
    for (int i = 0; i < warmup; ++i) run->run(stream);
    BTM_CUDA_CHECK(cudaEventRecord(start, stream));
    for (int i = 0; i < iterations; ++i) run->run(stream);
    BTM_CUDA_CHECK(cudaEventRecord(stop, stream));
    BTM_CUDA_CHECK(cudaEventSynchronize(stop));
    BTM_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  } catch (...) {
    cudaStreamSynchronize(stream);
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaStreamDestroy(stream);
    throw;
  }
  BTM_CUDA_CHECK(cudaEventDestroy(start));
  BTM_CUDA_CHECK(cudaEventDestroy(stop));
  BTM_CUDA_CHECK(cudaStreamDestroy(stream));
  return static_cast<double>(ms) / iterations;
}

namespace {
nlohmann::ordered_json shape_json(const KernelCase& c) {
  nlohmann::ordered_json shape = nlohmann::ordered_json::object();
  for (const auto& [name, size] : c.shape) shape[name] = size;
  return shape;
}
}  // namespace

std::string case_json(const KernelCase& c, double ms, int iterations, const std::string& device) {
  const double seconds = ms * 1e-3;
  return json_line({{"case", "kernel"},
                    {"system", "btm-cuda"},
                    {"device", device},
                    {"name", c.name},
                    {"op", c.op},
                    {"shape", shape_json(c)},
                    {"variant", c.variant},
                    {"iterations", iterations},
                    {"ms", rounded(ms, 4)},
                    {"bytes", c.bytes},
                    {"flops", c.flops},
                    {"gb_per_s", rounded(seconds > 0 ? c.bytes / seconds / 1e9 : 0.0, 1)},
                    {"tflop_per_s", rounded(seconds > 0 ? c.flops / seconds / 1e12 : 0.0, 3)}});
}

std::string case_skipped_json(const KernelCase& c, const std::string& why) {
  return json_line({{"case", "kernel"},
                    {"system", "btm-cuda"},
                    {"name", c.name},
                    {"op", c.op},
                    {"shape", shape_json(c)},
                    {"variant", c.variant},
                    {"skipped", why}});
}

void bench_kernel_cases(const std::string& filter, int warmup, int iterations, std::ostream& out) {
  std::vector<const KernelCase*> chosen;
  for (const KernelCase& c : kernel_cases())
    if (c.name.find(filter) != std::string::npos) chosen.push_back(&c);
  if (chosen.empty())
    throw InputError("--kernels '" + filter + "': no kernel case's name holds it (there are " +
                     std::to_string(kernel_cases().size()) + ")");
  BTM_CUDA_CHECK(cudaSetDevice(0));
  cudaDeviceProp props{};
  BTM_CUDA_CHECK(cudaGetDeviceProperties(&props, 0));
  out << "# bench kernels: " << chosen.size() << " case" << (chosen.size() == 1 ? "" : "s")
      << " on " << props.name << ", " << iterations << " timed runs after " << warmup
      << "; GB/s = bytes / time, TFLOP/s = FLOPs / time (each case's own counts)" << std::endl;
  for (const KernelCase* c : chosen) {
    const std::string why = c->unavailable ? c->unavailable() : std::string();
    if (!why.empty())
      out << case_skipped_json(*c, why) << std::endl;
    else
      out << case_json(*c, time_case_ms(*c, warmup, iterations), iterations, props.name)
          << std::endl;
  }
}

}  // namespace btm::cuda

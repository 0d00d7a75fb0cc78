// The kernel harness: every CUDA kernel of cuda/kernels.hpp against its fp32 CPU reference
// (cpu/kernels.hpp) on random inputs, forward and backward. Inputs are drawn already rounded to
// bf16, so the reference sees exactly what the kernel sees and the error measured is the
// kernel's own. Outputs are poisoned (NaN) before each run, so an unwritten element fails.
//
// Thresholds (see gpu_test_util.hpp: max-norm = max|gpu - cpu| / max|cpu|,
// rel L2 = ||gpu - cpu|| / ||cpu||). One rounding to bf16 costs at most 2^-8 = 0.39 % relative.
//   kernel                        output          max-norm   rel L2   why
//   encoder forward               bf16            5e-3       5e-3     one bf16 rounding
//   encoder backward              fp32 (+=)       1e-5       1e-5     fp32 sums, other order
//   layernorm forward             bf16            1e-2       5e-3     one rounding of (x-m)*s*w+b
//     mean, rstd                  fp32            1e-5       1e-5
//   layernorm backward  dinp      bf16            1e-2       5e-3     one rounding (+ the old dinp)
//                       dw, db    fp32 (+=)       1e-4       1e-5     fp32 sums over rows
//                       all       bitwise equal over two runs (fixed summation order)
//   linear forward (+ residual)   bf16            1e-2       5e-3     fp32 accumulate, 1 rounding
//   linear forward (fp32 out)     fp32            1e-4       1e-5     accumulation order only
//   linear backward     dinp      bf16            1e-2       5e-3
//                       dw, dbias fp32 (+=)       1e-4       1e-5
//   bias backward       dbias     fp32 (+=)       1e-4       1e-5     fp32 sums over row chunks;
//                                 bitwise equal over two runs (fixed summation order)
//   gelu forward / backward       bf16            1e-2       5e-3     tanhf vs std::tanh + rounding
//   linear + gelu (fused, cuBLASLt epilogues)
//     pre-GELU aux, out           bf16            1e-2       5e-3     one rounding each
//     dpre = (dout @ w) * gelu'   bf16            1e-2       5e-3     one rounding; = unfused path
//     tanh, not erf               mean |err| vs tanh < 1/4 of that vs erf on x in [-3.5, -2.5]
//   attention forward   out       bf16            3e-2       1.5e-2   bf16 scores, probabilities,
//                       att       bf16            2e-2       1e-2       and head outputs
//   attention backward  dqkv      bf16            5e-2       2.5e-2   ~6 chained bf16 roundings
//   (the fused flash kernel has the same thresholds; its log2-sum-exp is within 1e-3)
//   cross-entropy       losses    fp32            1e-4       1e-5     __expf, sum order
//                       dlogits   bf16            1e-2       5e-3     one rounding; padding exact 0
//                                 (also without the target entries, which dominate the norms);
//                                 in place, out of place and loss-only: the same bits
//   sum of squares                double          1e-6 relative       fp32 per-thread partials
//   AdamW               p, m, v   fp32            1e-6       1e-6     same formula (FMA
//   contraction)
//                       p bf16    bf16            exact               round(p) of the GPU's own p
//                       not finite sum of squares: p, p bf16, m, v bitwise unchanged
//   fixed-point sums (accumulate + zero, to floats, weighted sum, weighted add): bitwise equal
//     to fixed_point.hpp (sums, counts of rejected terms, floats) on edge values: the term
//     limit's neighbours, rounding ties, NaN, +-Inf, subnormals; NaN everywhere after a rejection
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <iostream>
#include <numeric>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "btm/cpu/kernels.hpp"
#include "btm/cuda/kernels.hpp"
#include "btm/util/error.hpp"
#include "btm/util/fixed_point.hpp"
#include "btm/util/rng.hpp"
#include "gpu_test_util.hpp"

namespace btm {
namespace {

using namespace gputest;
constexpr cudaStream_t kStream = nullptr;

TEST(CudaKernels, EncoderForward) {
  BTM_SKIP_WITHOUT_GPU();
  for (int C : {64, 12}) {  // 16-byte packs and the scalar path
    SCOPED_TRACE("C=" + std::to_string(C));
    const int B = 3, T = 17, V = 50;
    const auto wte = random_bf16_values(static_cast<std::size_t>(V) * C, 1.0f, 1);
    const auto wpe = random_bf16_values(static_cast<std::size_t>(T) * C, 1.0f, 2);
    const auto tokens = random_tokens(static_cast<std::size_t>(B) * T, V, 3);
    std::vector<float> want(static_cast<std::size_t>(B) * T * C);
    cpu::encoder_forward(want.data(), tokens.data(), wte.data(), wpe.data(), B, T, C);

    auto d_wte = to_device_bf16(wte), d_wpe = to_device_bf16(wpe);
    auto d_tokens = to_device(tokens);
    auto d_out = poisoned<bf16>(want.size());
    cuda::encoder_forward(d_out.get(), d_tokens.get(), d_wte.get(), d_wpe.get(), B, T, C, kStream);
    BTM_EXPECT_CLOSE(from_device_bf16(d_out, want.size()), want, 5e-3, 5e-3);
  }
}

TEST(CudaKernels, EncoderBackward) {
  BTM_SKIP_WITHOUT_GPU();
  const int B = 4, T = 9, C = 24, V = 7;  // a small vocabulary: many repeated tokens
  const auto dout = random_bf16_values(static_cast<std::size_t>(B) * T * C, 1.0f, 4);
  const auto tokens = random_tokens(static_cast<std::size_t>(B) * T, V, 5);
  auto want_wte = random_floats(static_cast<std::size_t>(V) * C, -1, 1, 6);
  auto want_wpe = random_floats(static_cast<std::size_t>(T) * C, -1, 1, 7);
  auto d_wte = to_device(want_wte), d_wpe = to_device(want_wpe);  // gradients accumulate
  cpu::encoder_backward(want_wte.data(), want_wpe.data(), dout.data(), tokens.data(), B, T, C);

  cuda::TokenBuckets buckets;
  buckets.build(tokens.data(), tokens.size(), V);
  ASSERT_EQ(buckets.offsets.size(), buckets.tokens.size() + 1);
  ASSERT_EQ(static_cast<std::size_t>(buckets.offsets.back()), tokens.size());
  auto d_dout = to_device_bf16(dout);
  auto d_bt = to_device(buckets.tokens), d_bo = to_device(buckets.offsets),
       d_bp = to_device(buckets.positions);
  cuda::encoder_backward_wte(d_wte.get(), d_dout.get(), d_bt.get(), d_bo.get(), d_bp.get(),
                             static_cast<int>(buckets.tokens.size()), C, kStream);
  cuda::encoder_backward_wpe(d_wpe.get(), d_dout.get(), B, T, C, kStream);
  BTM_EXPECT_CLOSE(from_device(d_wte, want_wte.size()), want_wte, 1e-5, 1e-5);
  BTM_EXPECT_CLOSE(from_device(d_wpe, want_wpe.size()), want_wpe, 1e-5, 1e-5);
}

TEST(CudaKernels, TokenBucketsGroupPositionsByToken) {
  // Host-only logic, but part of the GPU embedding backward: runs everywhere.
  const std::vector<std::int32_t> tokens = {3, 1, 3, 0, 1, 3};
  cuda::TokenBuckets b;
  b.build(tokens.data(), tokens.size(), 5);
  EXPECT_EQ(b.tokens, (std::vector<std::int32_t>{0, 1, 3}));
  EXPECT_EQ(b.offsets, (std::vector<std::int32_t>{0, 1, 3, 6}));
  EXPECT_EQ(b.positions, (std::vector<std::int32_t>{3, 1, 4, 0, 2, 5}));
}

TEST(CudaKernels, LayerNormForward) {
  BTM_SKIP_WITHOUT_GPU();
  for (int C : {64, 36}) {
    SCOPED_TRACE("C=" + std::to_string(C));
    const int N = 37;
    const auto x = random_bf16_values(static_cast<std::size_t>(N) * C, 2.0f, 8);
    const auto w = random_bf16_values(C, 1.5f, 9), b = random_bf16_values(C, 0.5f, 10);
    std::vector<float> want(x.size()), want_mean(N), want_rstd(N);
    cpu::layernorm_forward(want.data(), want_mean.data(), want_rstd.data(), x.data(), w.data(),
                           b.data(), N, C);
    auto d_x = to_device_bf16(x), d_w = to_device_bf16(w), d_b = to_device_bf16(b);
    auto d_out = poisoned<bf16>(x.size());
    auto d_mean = poisoned<float>(N), d_rstd = poisoned<float>(N);
    cuda::layernorm_forward(d_out.get(), d_mean.get(), d_rstd.get(), d_x.get(), d_w.get(),
                            d_b.get(), N, C, kStream);
    BTM_EXPECT_CLOSE(from_device_bf16(d_out, x.size()), want, 1e-2, 5e-3);
    BTM_EXPECT_CLOSE(from_device(d_mean, N), want_mean, 1e-5, 1e-5);
    BTM_EXPECT_CLOSE(from_device(d_rstd, N), want_rstd, 1e-5, 1e-5);
  }
}

TEST(CudaKernels, LayerNormBackward) {
  BTM_SKIP_WITHOUT_GPU();
  // C = 64 ... 1600 with 16-byte packs and C = 36, 1004 with single bf16 run the register
  // kernel (1, 3, 7, 2 and 32 packs per lane); C = 2304 and 1100 its shared-memory fallback.
  // N = 9000 rows: more rows than the grid has warps, so warps carry sums over several rows.
  for (int C : {64, 768, 1600, 2304, 36, 1004, 1100}) {
    for (bool accumulate : {false, true}) {
      SCOPED_TRACE("C=" + std::to_string(C) + (accumulate ? " accumulate" : " overwrite"));
      const int N = 9000;
      const auto x = random_bf16_values(static_cast<std::size_t>(N) * C, 2.0f, 15);
      const auto w = random_bf16_values(C, 1.5f, 16), b = random_bf16_values(C, 0.5f, 17);
      const auto dout = random_bf16_values(x.size(), 1.0f, 18);
      std::vector<float> out(x.size()), mean(N), rstd(N);
      cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N,
                             C);
      const auto old_dinp = random_bf16_values(x.size(), 1.0f, 19);
      const auto old_dw = random_floats(C, -1, 1, 20), old_db = random_floats(C, -1, 1, 21);
      auto want_dw = old_dw, want_db = old_db;
      std::vector<float> want_dinp(x.size());
      cpu::layernorm_backward(want_dinp.data(), want_dw.data(), want_db.data(), dout.data(),
                              x.data(), w.data(), mean.data(), rstd.data(), N, C);
      if (accumulate)
        for (std::size_t i = 0; i < x.size(); ++i) want_dinp[i] += old_dinp[i];

      auto d_x = to_device_bf16(x), d_w = to_device_bf16(w), d_dout = to_device_bf16(dout);
      auto d_mean = to_device(mean), d_rstd = to_device(rstd);
      DeviceArray<float> scratch(cuda::layernorm_backward_scratch_floats(C));
      // Twice from the same inputs: the results must be bitwise equal (no atomics).
      std::vector<float> first_dinp, first_dw, first_db;
      for (int run = 0; run < 2; ++run) {
        auto d_dw = to_device(old_dw), d_db = to_device(old_db);
        auto d_dinp = accumulate ? to_device_bf16(old_dinp) : poisoned<bf16>(x.size());
        cuda::layernorm_backward(d_dinp.get(), d_dw.get(), d_db.get(), scratch.get(), d_dout.get(),
                                 d_x.get(), d_w.get(), d_mean.get(), d_rstd.get(), N, C, accumulate,
                                 kStream);
        auto got_dinp = from_device_bf16(d_dinp, x.size());
        auto got_dw = from_device(d_dw, C), got_db = from_device(d_db, C);
        if (run == 0) {
          BTM_EXPECT_CLOSE(got_dinp, want_dinp, 1e-2, 5e-3);
          BTM_EXPECT_CLOSE(got_dw, want_dw, 1e-4, 1e-5);
          BTM_EXPECT_CLOSE(got_db, want_db, 1e-4, 1e-5);
          first_dinp = std::move(got_dinp), first_dw = std::move(got_dw);
          first_db = std::move(got_db);
        } else {
          EXPECT_TRUE(got_dinp == first_dinp) << "dinp differs between two runs";
          EXPECT_TRUE(got_dw == first_dw) << "dw differs between two runs";
          EXPECT_TRUE(got_db == first_db) << "db differs between two runs";
        }
      }
    }
  }
}

TEST(CudaKernels, LinearForward) {
  BTM_SKIP_WITHOUT_GPU();
  cuda::Blas blas;
  const int N = 70, IC = 64, OC = 192;
  const auto inp = random_bf16_values(static_cast<std::size_t>(N) * IC, 1.0f, 22);
  const auto w = random_bf16_values(static_cast<std::size_t>(OC) * IC, 0.2f, 23);
  const auto bias = random_bf16_values(OC, 0.5f, 24);
  auto d_inp = to_device_bf16(inp), d_w = to_device_bf16(w), d_bias = to_device_bf16(bias);
  for (bool with_bias : {true, false}) {
    SCOPED_TRACE(with_bias ? "bias" : "no bias");
    std::vector<float> want(static_cast<std::size_t>(N) * OC);
    cpu::matmul_forward(want.data(), inp.data(), w.data(), with_bias ? bias.data() : nullptr, N, IC,
                        OC);
    auto d_out = poisoned<bf16>(want.size());
    blas.linear_forward(d_out.get(), d_inp.get(), d_w.get(), with_bias ? d_bias.get() : nullptr, N,
                        IC, OC, kStream);
    BTM_EXPECT_CLOSE(from_device_bf16(d_out, want.size()), want, 1e-2, 5e-3);
    // The residual as the GEMM's C: out = residual + inp @ w^T (+ bias), rounded once.
    const auto residual = random_bf16_values(want.size(), 2.0f, 30);
    std::vector<float> want_sum(want.size());
    cpu::residual_forward(want_sum.data(), residual.data(), want.data(), want.size());
    auto d_residual = to_device_bf16(residual);
    auto d_sum = poisoned<bf16>(want.size());
    blas.linear_residual_forward(d_sum.get(), d_residual.get(), d_inp.get(), d_w.get(),
                                 with_bias ? d_bias.get() : nullptr, N, IC, OC, kStream);
    BTM_EXPECT_CLOSE(from_device_bf16(d_sum, want.size()), want_sum, 1e-2, 5e-3);
    EXPECT_TRUE(from_device_bf16(d_residual, want.size()) == residual)
        << "the residual input was written";
    if (!with_bias) {
      auto d_out_f = poisoned<float>(want.size());
      blas.linear_forward_float(d_out_f.get(), d_inp.get(), d_w.get(), N, IC, OC, kStream);
      BTM_EXPECT_CLOSE(from_device(d_out_f, want.size()), want, 1e-4, 1e-5);
    }
  }
}

TEST(CudaKernels, LinearBackward) {
  BTM_SKIP_WITHOUT_GPU();
  cuda::Blas blas;
  for (int N : {70, 3000}) {  // 3000 rows: several row chunks in the bias gradient
    SCOPED_TRACE("N=" + std::to_string(N));
    const int IC = 96, OC = 64;
    const auto inp = random_bf16_values(static_cast<std::size_t>(N) * IC, 1.0f, 25);
    const auto w = random_bf16_values(static_cast<std::size_t>(OC) * IC, 0.2f, 26);
    const auto dout = random_bf16_values(static_cast<std::size_t>(N) * OC, 1.0f, 27);
    auto want_dw = random_floats(static_cast<std::size_t>(OC) * IC, -1, 1, 28);
    auto want_db = random_floats(OC, -1, 1, 29);
    auto d_dw = to_device(want_dw), d_db = to_device(want_db);
    std::vector<float> want_dinp(static_cast<std::size_t>(N) * IC);
    cpu::matmul_backward(want_dinp.data(), want_dw.data(), want_db.data(), dout.data(), inp.data(),
                         w.data(), N, IC, OC);

    auto d_inp = to_device_bf16(inp), d_w = to_device_bf16(w), d_dout = to_device_bf16(dout);
    auto d_dinp = poisoned<bf16>(want_dinp.size());
    DeviceArray<float> scratch(cuda::bias_backward_scratch_floats(OC));
    blas.linear_backward_input(d_dinp.get(), d_dout.get(), d_w.get(), N, IC, OC, kStream);
    blas.linear_backward_weight(d_dw.get(), d_dout.get(), d_inp.get(), N, IC, OC, kStream);
    cuda::bias_backward(d_db.get(), scratch.get(), d_dout.get(), N, OC, kStream);
    BTM_EXPECT_CLOSE(from_device_bf16(d_dinp, want_dinp.size()), want_dinp, 1e-2, 5e-3);
    BTM_EXPECT_CLOSE(from_device(d_dw, want_dw.size()), want_dw, 1e-4, 1e-5);
    BTM_EXPECT_CLOSE(from_device(d_db, want_db.size()), want_db, 1e-4, 1e-5);
  }
}

// The bias gradient alone. OC % 8 == 0 with a 16-byte aligned dout runs the 16-byte kernel
// (OC = 768: three full blocks of 256 columns; 72: part of one); OC = 36, and OC = 64 with dout 8
// bytes off alignment, the scalar one. N = 20011 (prime) is no multiple of the row chunk (at
// least 32 rows; on an H200 ~76 for OC = 768: two unrolled steps of 4 rows per row lane and a
// tail); N = 5 leaves some row lanes idle.
// The reference: the CPU's matmul backward with one input channel (double column sums).
TEST(CudaKernels, BiasBackward) {
  BTM_SKIP_WITHOUT_GPU();
  struct Case {
    int OC, offset;  // dout starts `offset` bf16 into its array
  };
  for (const auto [OC, offset] : {Case{768, 0}, Case{72, 0}, Case{36, 0}, Case{64, 4}}) {
    for (int N : {20011, 5}) {
      SCOPED_TRACE("OC=" + std::to_string(OC) + " offset=" + std::to_string(offset) +
                   " N=" + std::to_string(N));
      const auto padded = random_bf16_values(static_cast<std::size_t>(N) * OC + offset, 1.0f, 52);
      const std::vector<float> dout(padded.begin() + offset, padded.end());
      const auto old_db = random_floats(OC, -1, 1, 53);
      auto want_db = old_db;
      std::vector<float> inp(N, 1.0f), w(OC, 0.0f), dinp(N), dw(OC, 0.0f);
      cpu::matmul_backward(dinp.data(), dw.data(), want_db.data(), dout.data(), inp.data(),
                           w.data(), N, 1, OC);

      auto d_dout = to_device_bf16(padded);
      DeviceArray<float> scratch(cuda::bias_backward_scratch_floats(OC));
      // Twice from the same inputs: the results must be bitwise equal (no atomics).
      std::vector<float> first;
      for (int run = 0; run < 2; ++run) {
        auto d_db = to_device(old_db);  // += semantics
        cuda::bias_backward(d_db.get(), scratch.get(), d_dout.get() + offset, N, OC, kStream);
        auto got = from_device(d_db, OC);
        if (run == 0) {
          BTM_EXPECT_CLOSE(got, want_db, 1e-4, 1e-5);
          first = std::move(got);
        } else {
          EXPECT_TRUE(got == first) << "dbias differs between two runs";
        }
      }
    }
  }
}

// The MLP's fc layer with the GELU in the GEMM's epilogue, and the input gradient through
// the next linear layer and the GELU, against the CPU's matmul + gelu (and the unfused GPU
// path). The pre-GELU aux matrix is bf16 in both GPU paths; the backward reference takes it
// rounded so. The fused outputs see one bf16 rounding where the unfused ones see two.
TEST(CudaKernels, LinearGeluFused) {
  BTM_SKIP_WITHOUT_GPU();
  cuda::Blas blas;
  const int N = 70, C = 64, H = 4 * C;  // fc: [N, C] -> [N, H]; fcproj: [N, H] -> [N, C]
  const auto inp = random_bf16_values(static_cast<std::size_t>(N) * C, 1.0f, 44);
  const auto w = random_bf16_values(static_cast<std::size_t>(H) * C, 0.3f, 45);
  const auto bias = random_bf16_values(H, 0.5f, 46);
  const auto w2 = random_bf16_values(static_cast<std::size_t>(C) * H, 0.2f, 47);
  const auto dout = random_bf16_values(static_cast<std::size_t>(N) * C, 1.0f, 48);
  const std::size_t NH = static_cast<std::size_t>(N) * H;
  std::vector<float> want_pre(NH), want_out(NH);
  cpu::matmul_forward(want_pre.data(), inp.data(), w.data(), bias.data(), N, C, H);
  cpu::gelu_forward(want_out.data(), want_pre.data(), NH);

  auto d_inp = to_device_bf16(inp), d_w = to_device_bf16(w), d_bias = to_device_bf16(bias);
  auto d_w2 = to_device_bf16(w2), d_dout = to_device_bf16(dout);
  auto d_out = poisoned<bf16>(NH), d_pre = poisoned<bf16>(NH);
  ASSERT_TRUE(cuda::Blas::gelu_epilogue_supported(d_pre.get(), H));
  blas.linear_gelu_forward(d_out.get(), d_pre.get(), d_inp.get(), d_w.get(), d_bias.get(), N, C, H,
                           kStream);
  const auto got_pre = from_device_bf16(d_pre, NH);
  BTM_EXPECT_CLOSE(got_pre, want_pre, 1e-2, 5e-3);
  BTM_EXPECT_CLOSE(from_device_bf16(d_out, NH), want_out, 1e-2, 5e-3);

  // The inference form (no pre-activations kept) gives the same output (another cuBLASLt kernel
  // may sum in another order: the same threshold against the CPU).
  auto d_out_inference = poisoned<bf16>(NH);
  blas.linear_gelu_forward(d_out_inference.get(), nullptr, d_inp.get(), d_w.get(), d_bias.get(), N,
                           C, H, kStream);
  BTM_EXPECT_CLOSE(from_device_bf16(d_out_inference, NH), want_out, 1e-2, 5e-3);

  // dpre = (dout @ w2) * gelu'(pre), with the pre-activations the GPU stored.
  std::vector<float> dh(NH), dw2(static_cast<std::size_t>(C) * H), want_dpre(NH);
  cpu::matmul_backward(dh.data(), dw2.data(), nullptr, dout.data(), want_out.data(), w2.data(), N,
                       H, C);
  cpu::gelu_backward(want_dpre.data(), got_pre.data(), dh.data(), NH);
  auto d_dpre = poisoned<bf16>(NH);
  blas.linear_backward_input_dgelu(d_dpre.get(), d_dout.get(), d_w2.get(), d_pre.get(), N, H, C,
                                   kStream);
  const auto got_dpre = from_device_bf16(d_dpre, NH);
  BTM_EXPECT_CLOSE(got_dpre, want_dpre, 1e-2, 5e-3);

  auto d_unfused = poisoned<bf16>(NH);
  blas.linear_backward_input(d_unfused.get(), d_dout.get(), d_w2.get(), N, H, C, kStream);
  cuda::gelu_backward(d_unfused.get(), d_pre.get(), d_unfused.get(), NH, kStream);
  BTM_EXPECT_CLOSE(from_device_bf16(d_unfused, NH), got_dpre, 1e-2, 5e-3);

  // Aux matrices cuBLASLt cannot take are refused, not silently mis-computed.
  EXPECT_FALSE(cuda::Blas::gelu_epilogue_supported(d_pre.get(), 36));     // ld not a multiple of 8
  EXPECT_FALSE(cuda::Blas::gelu_epilogue_supported(d_pre.get() + 1, H));  // 2-byte aligned
  EXPECT_THROW(blas.linear_gelu_forward(d_out.get(), d_pre.get() + 1, d_inp.get(), d_w.get(),
                                        d_bias.get(), N, C, H, kStream),
               SystemError);
}

// GPT-2's GELU is the tanh approximation (cpu::gelu_forward); the exact erf GELU differs from it
// by up to 4.4e-4 around |x| = 2.5 .. 3.5, where the outputs are small (|gelu| < 0.02) and
// their bf16 rounding is below 3e-5. There the epilogue must be much closer to the tanh form
// than to the erf one. Pre-activations x_n = -3.5 + n/64 (exact in bf16) come from a one-hot
// GEMM: inp[n, 0] = x_n, w[:, 0] = 1, every other entry 0, bias 0.
TEST(CudaKernels, GeluEpilogueIsTheTanhApproximation) {
  BTM_SKIP_WITHOUT_GPU();
  cuda::Blas blas;
  const int N = 64, IC = 64, OC = 64;
  std::vector<float> inp(static_cast<std::size_t>(N) * IC, 0.0f),
      w(static_cast<std::size_t>(OC) * IC, 0.0f);
  std::vector<float> xs(N);
  for (int n = 0; n < N; ++n) inp[static_cast<std::size_t>(n) * IC] = xs[n] = -3.5f + n / 64.0f;
  for (int o = 0; o < OC; ++o) w[static_cast<std::size_t>(o) * IC] = 1.0f;
  auto d_inp = to_device_bf16(inp), d_w = to_device_bf16(w);
  auto d_bias = to_device_bf16(std::vector<float>(OC, 0.0f));
  auto d_out = poisoned<bf16>(static_cast<std::size_t>(N) * OC);
  auto d_pre = poisoned<bf16>(static_cast<std::size_t>(N) * OC);
  blas.linear_gelu_forward(d_out.get(), d_pre.get(), d_inp.get(), d_w.get(), d_bias.get(), N, IC,
                           OC, kStream);
  const auto out = from_device_bf16(d_out, static_cast<std::size_t>(N) * OC);
  std::vector<float> tanh_form(N);
  cpu::gelu_forward(tanh_form.data(), xs.data(), N);
  double err_tanh = 0, err_erf = 0;
  for (int n = 0; n < N; ++n) {
    const double x = xs[n];
    const double erf_form = 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    for (int o = 0; o < OC; ++o) {
      const double got = out[static_cast<std::size_t>(n) * OC + o];
      err_tanh += std::abs(got - tanh_form[n]);
      err_erf += std::abs(got - erf_form);
    }
  }
  err_tanh /= N * OC;
  err_erf /= N * OC;
  std::cout << "GELU epilogue, mean |error| on x in [-3.5, -2.5]: vs tanh form " << err_tanh
            << ", vs erf form " << err_erf << "\n";
  EXPECT_LT(err_tanh, 0.25 * err_erf);
}

TEST(CudaKernels, Gelu) {
  BTM_SKIP_WITHOUT_GPU();
  for (std::size_t n : {std::size_t{4096}, std::size_t{1003}}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    const auto x = random_bf16_values(n, 4.0f, 30);
    const auto dout = random_bf16_values(n, 1.0f, 31);
    std::vector<float> want(n), want_d(n);
    cpu::gelu_forward(want.data(), x.data(), n);
    cpu::gelu_backward(want_d.data(), x.data(), dout.data(), n);
    auto d_x = to_device_bf16(x), d_dout = to_device_bf16(dout);
    auto d_out = poisoned<bf16>(n);
    cuda::gelu_forward(d_out.get(), d_x.get(), n, kStream);
    cuda::gelu_backward(d_dout.get(), d_x.get(), d_dout.get(), n, kStream);  // in place
    BTM_EXPECT_CLOSE(from_device_bf16(d_out, n), want, 1e-2, 5e-3);
    BTM_EXPECT_CLOSE(from_device_bf16(d_dout, n), want_d, 1e-2, 5e-3);
  }
}

TEST(CudaKernels, HeadsSplitMergeRoundTrip) {
  BTM_SKIP_WITHOUT_GPU();
  const int B = 2, T = 5, NH = 3, hs = 8, C = NH * hs;
  const auto qkv = random_bf16_values(static_cast<std::size_t>(B) * T * 3 * C, 1.0f, 32);
  auto d_qkv = to_device_bf16(qkv);
  auto d_k = poisoned<bf16>(static_cast<std::size_t>(B) * T * C);
  cuda::heads_split(d_k.get(), d_qkv.get(), B, T, NH, hs, 3 * C, C, kStream);
  const auto k = from_device_bf16(d_k, static_cast<std::size_t>(B) * T * C);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t)
        for (int d = 0; d < hs; ++d)
          ASSERT_EQ(k[((static_cast<std::size_t>(b) * NH + h) * T + t) * hs + d],
                    qkv[(static_cast<std::size_t>(b) * T + t) * 3 * C + C + h * hs + d]);
  auto d_back = to_device_bf16(std::vector<float>(qkv.size(), 0.0f));
  cuda::heads_merge(d_back.get(), d_k.get(), B, T, NH, hs, 3 * C, C, kStream);
  const auto back = from_device_bf16(d_back, qkv.size());
  for (std::size_t row = 0; row < static_cast<std::size_t>(B) * T; ++row)
    for (int c = 0; c < 3 * C; ++c) {
      const std::size_t i = row * 3 * C + c;
      ASSERT_EQ(back[i], (c >= C && c < 2 * C) ? qkv[i] : 0.0f);
    }
}

struct AttentionShape {
  int B, T, C, NH;
};
// How gtest prints a case (instead of its bytes).
void PrintTo(const AttentionShape& s, std::ostream* os) {
  *os << "B=" << s.B << " T=" << s.T << " C=" << s.C << " NH=" << s.NH;
}

class CudaAttention : public ::testing::TestWithParam<AttentionShape> {};

TEST_P(CudaAttention, ForwardAndBackwardMatchCpu) {
  BTM_SKIP_WITHOUT_GPU();
  const auto [B, T, C, NH] = GetParam();
  cuda::Blas blas;
  const std::size_t NC = static_cast<std::size_t>(B) * T * C;
  const std::size_t att_size = static_cast<std::size_t>(B) * NH * T * T;
  const auto qkv = random_bf16_values(3 * NC, 1.0f, 33);
  const auto dout = random_bf16_values(NC, 1.0f, 34);
  std::vector<float> want(NC), want_att(att_size), want_dqkv(3 * NC);
  cpu::attention_forward(want.data(), want_att.data(), qkv.data(), B, T, C, NH);
  cpu::attention_backward(want_dqkv.data(), dout.data(), qkv.data(), want_att.data(), B, T, C, NH);

  auto d_qkv = to_device_bf16(qkv), d_dout = to_device_bf16(dout);
  auto d_out = poisoned<bf16>(NC), d_att = poisoned<bf16>(att_size);
  auto d_qkvr = poisoned<bf16>(3 * NC), d_vaccum = poisoned<bf16>(NC);
  cuda::attention_forward(blas, d_out.get(), d_qkvr.get(), d_att.get(), d_vaccum.get(), d_qkv.get(),
                          B, T, C, NH, kStream);
  BTM_EXPECT_CLOSE(from_device_bf16(d_out, NC), want, 3e-2, 1.5e-2);
  BTM_EXPECT_CLOSE(from_device_bf16(d_att, att_size), want_att, 2e-2, 1e-2);

  auto d_dqkv = poisoned<bf16>(3 * NC), d_dqkvr = poisoned<bf16>(3 * NC);
  auto d_datt = poisoned<bf16>(att_size), d_dvaccum = poisoned<bf16>(NC);
  cuda::attention_backward(blas, d_dqkv.get(), d_dqkvr.get(), d_datt.get(), d_dvaccum.get(),
                           d_dout.get(), d_qkvr.get(), d_att.get(), B, T, C, NH, kStream);
  BTM_EXPECT_CLOSE(from_device_bf16(d_dqkv, 3 * NC), want_dqkv, 5e-2, 2.5e-2);
}

std::string shape_name(const ::testing::TestParamInfo<AttentionShape>& info) {
  const AttentionShape& s = info.param;
  return "B" + std::to_string(s.B) + "_T" + std::to_string(s.T) + "_C" + std::to_string(s.C) +
         "_NH" + std::to_string(s.NH);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaAttention,
                         ::testing::Values(AttentionShape{2, 64, 64, 2},      // hs 32
                                           AttentionShape{2, 37, 64, 4},      // odd T, hs 16
                                           AttentionShape{1, 128, 256, 2},    // hs 128
                                           AttentionShape{1, 1024, 128, 2}),  // GPT-2's T
                         shape_name);

// The fused kernels (head dim 64), both implementations: same references and thresholds as the
// materialized one, plus the rows' log2-sum-exp against the CPU's scores (|error| <= 1e-3). The
// wgmma ones are skipped (reported) on a GPU or build without them.
using FlashCase = std::tuple<AttentionShape, cuda::FlashKernels>;
void PrintTo(const FlashCase& c, std::ostream* os) {
  PrintTo(std::get<0>(c), os);
  *os << (std::get<1>(c) == cuda::FlashKernels::wgmma ? " wgmma" : " mma.sync");
}
class CudaFlashAttention : public ::testing::TestWithParam<FlashCase> {};

TEST_P(CudaFlashAttention, ForwardAndBackwardMatchCpu) {
  BTM_SKIP_WITHOUT_GPU();
  const auto [shape, kernels] = GetParam();
  if (kernels == cuda::FlashKernels::wgmma && !cuda::flash_wgmma_available())
    GTEST_SKIP() << "no sm_90a build or no compute capability 9.0 GPU: wgmma kernels not run";
  const auto [B, T, C, NH] = shape;
  const int hs = C / NH;
  ASSERT_TRUE(cuda::flash_attention_supported(hs));
  const std::size_t NC = static_cast<std::size_t>(B) * T * C;
  const std::size_t rows = static_cast<std::size_t>(B) * NH * T;
  const auto qkv = random_bf16_values(3 * NC, 1.0f, 42);
  const auto dout = random_bf16_values(NC, 1.0f, 43);
  std::vector<float> want(NC), att(static_cast<std::size_t>(B) * NH * T * T), want_dqkv(3 * NC);
  cpu::attention_forward(want.data(), att.data(), qkv.data(), B, T, C, NH);
  cpu::attention_backward(want_dqkv.data(), dout.data(), qkv.data(), att.data(), B, T, C, NH);
  // log2(sum_{j <= t} exp(q_t . k_j / sqrt(hs))) per (b, h, t), in double.
  std::vector<float> want_lse(rows);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        const float* q = qkv.data() + (static_cast<std::size_t>(b) * T + t) * 3 * C + h * hs;
        double sum = 0;
        for (int j = 0; j <= t; ++j) {
          const float* k = qkv.data() + (static_cast<std::size_t>(b) * T + j) * 3 * C + C + h * hs;
          double dot = 0;
          for (int d = 0; d < hs; ++d) dot += static_cast<double>(q[d]) * k[d];
          sum += std::exp(dot / std::sqrt(static_cast<double>(hs)));
        }
        want_lse[(static_cast<std::size_t>(b) * NH + h) * T + t] =
            static_cast<float>(std::log2(sum));
      }

  auto d_qkv = to_device_bf16(qkv), d_dout = to_device_bf16(dout);
  auto d_out = poisoned<bf16>(NC);
  auto d_lse = poisoned<float>(rows);
  cuda::flash_attention_forward(d_out.get(), d_lse.get(), d_qkv.get(), B, T, C, NH, kStream,
                                kernels);
  BTM_EXPECT_CLOSE(from_device_bf16(d_out, NC), want, 3e-2, 1.5e-2);
  const auto got_lse = from_device(d_lse, rows);
  for (std::size_t i = 0; i < rows; ++i) ASSERT_NEAR(got_lse[i], want_lse[i], 1e-3) << i;

  auto d_dqkv = poisoned<bf16>(3 * NC);
  auto d_dvec = poisoned<float>(rows);
  cuda::flash_attention_backward(d_dqkv.get(), d_dvec.get(), d_dout.get(), d_qkv.get(), d_out.get(),
                                 d_lse.get(), B, T, C, NH, kStream, kernels);
  BTM_EXPECT_CLOSE(from_device_bf16(d_dqkv, 3 * NC), want_dqkv, 5e-2, 2.5e-2);
}

std::string flash_case_name(const ::testing::TestParamInfo<FlashCase>& info) {
  const AttentionShape& s = std::get<0>(info.param);
  const bool wgmma = std::get<1>(info.param) == cuda::FlashKernels::wgmma;
  return shape_name({s, info.index}) + (wgmma ? "_wgmma" : "_mma_sync");
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, CudaFlashAttention,
    ::testing::Combine(::testing::Values(AttentionShape{2, 100, 128, 2},   // partial last tile
                                         AttentionShape{1, 256, 64, 1},    // 4 full tiles
                                         AttentionShape{3, 17, 192, 3},    // one partial tile
                                         AttentionShape{1, 1024, 128, 2},  // 16 tiles
                                         AttentionShape{2, 200, 128, 2},   // 2 blocks, partial
                                         // GPT-2 small's heads: several blocks per SM at once,
                                         // as in training (races between them show here)
                                         AttentionShape{2, 1024, 768, 12}),
                       ::testing::Values(cuda::FlashKernels::mma_sync, cuda::FlashKernels::wgmma)),
    flash_case_name);

// Vp % 8 == 0 runs the register kernel (each row read once): V = 100 of Vp = 128 in one warp, 1
// pack per thread, padding from inside a pack through three whole packs; 4000 without padding,
// 1 pack per thread over 16 warps, the last warp's tail holding no logits; GPT-2's 50257 of
// 50304, 7 packs per thread. Vp = 60000 is beyond the registers (7 * 1024 packs of 8) and
// Vp = 101 no multiple of 8: the two-pass kernel with 16-byte packs and with single bf16.
// fp32 (evaluation): Vp % 4 == 0 runs the 16-byte kernel (with V = 100, threads that hold only
// padding), Vp = 101 the two-pass kernel.
TEST(CudaKernels, CrossEntropy) {
  BTM_SKIP_WITHOUT_GPU();
  struct Shape {
    int V, Vp;
  };
  for (const auto [V, Vp] : {Shape{100, 128}, Shape{4000, 4000}, Shape{50257, 50304},
                             Shape{59995, 60000}, Shape{100, 101}}) {
    SCOPED_TRACE("V=" + std::to_string(V) + " Vp=" + std::to_string(Vp));
    const int N = 9;
    const std::size_t n = static_cast<std::size_t>(N) * Vp;
    auto logits = random_bf16_values(n, 4.0f, 35);
    for (int i = 0; i < N; ++i)  // the padded columns are large: they must be ignored
      for (int j = V; j < Vp; ++j) logits[static_cast<std::size_t>(i) * Vp + j] = 50.0f;
    auto targets = random_tokens(N, V, 36);
    targets[0] = V - 1, targets[1] = 0;  // the last column (next to the padding) and the first
    const float dloss = 1.0f / N;
    std::vector<float> want_losses(N), want_d(n);
    cpu::crossentropy_forward_backward(want_losses.data(), want_d.data(), logits.data(),
                                       targets.data(), N, V, Vp, dloss);

    auto d_logits = to_device_bf16(logits);
    auto d_targets = to_device(targets);
    // Loss only: the logits stay untouched.
    auto d_losses_only = poisoned<float>(N);
    cuda::crossentropy_forward_backward(d_losses_only.get(), nullptr, d_logits.get(),
                                        d_targets.get(), N, V, Vp, dloss, kStream);
    const auto got_losses_only = from_device(d_losses_only, N);
    BTM_EXPECT_CLOSE(got_losses_only, want_losses, 1e-4, 1e-5);
    EXPECT_TRUE(from_device_bf16(d_logits, n) == logits) << "the loss-only run wrote logits";

    // The gradient into another array, then in place as the engine runs it: the same bits.
    auto d_other = poisoned<bf16>(n);
    auto d_losses_other = poisoned<float>(N);
    cuda::crossentropy_forward_backward(d_losses_other.get(), d_other.get(), d_logits.get(),
                                        d_targets.get(), N, V, Vp, dloss, kStream);
    const auto got_other = from_device_bf16(d_other, n);
    auto d_losses = poisoned<float>(N);
    cuda::crossentropy_forward_backward(d_losses.get(), d_logits.get(), d_logits.get(),
                                        d_targets.get(), N, V, Vp, dloss, kStream);
    const auto got_losses = from_device(d_losses, N);
    BTM_EXPECT_CLOSE(got_losses, want_losses, 1e-4, 1e-5);
    EXPECT_TRUE(got_losses == got_losses_only) << "losses differ with and without gradient";
    EXPECT_TRUE(from_device(d_losses_other, N) == got_losses);
    auto got_d = from_device_bf16(d_logits, n);
    BTM_EXPECT_CLOSE(got_d, want_d, 1e-2, 5e-3);
    EXPECT_TRUE(got_other == got_d) << "the gradient differs in place and out of place";
    for (int i = 0; i < N; ++i)
      for (int j = V; j < Vp; ++j) ASSERT_EQ(got_d[static_cast<std::size_t>(i) * Vp + j], 0.0f);
    // The target entries (~ -dloss) dominate both norms; the softmax part on its own:
    for (int i = 0; i < N; ++i) {
      const std::size_t t = static_cast<std::size_t>(i) * Vp + targets[i];
      got_d[t] = 0.0f, want_d[t] = 0.0f;
    }
    BTM_EXPECT_CLOSE(got_d, want_d, 1e-2, 5e-3);

    // fp32 logits, no gradient (evaluation)
    auto d_logits_f = to_device(logits);
    auto d_losses_f = poisoned<float>(N);
    cuda::crossentropy_forward(d_losses_f.get(), d_logits_f.get(), d_targets.get(), N, V, Vp,
                               kStream);
    BTM_EXPECT_CLOSE(from_device(d_losses_f, N), want_losses, 1e-4, 1e-5);
  }
}

TEST(CudaKernels, MeanOf) {
  BTM_SKIP_WITHOUT_GPU();
  const auto values = random_floats(5000, 0, 10, 37);
  const double want = std::accumulate(values.begin(), values.end(), 0.0) / values.size();
  auto d_values = to_device(values);
  auto d_mean = poisoned<float>(1);
  cuda::mean_of(d_mean.get(), d_values.get(), static_cast<int>(values.size()), kStream);
  EXPECT_NEAR(from_device(d_mean, 1)[0], want, 1e-6 * want);
}

TEST(CudaKernels, SumOfSquaresAndAdamW) {
  BTM_SKIP_WITHOUT_GPU();
  // Three tensors: decayed weight, undecayed bias, decayed weight.
  const std::vector<std::size_t> sizes = {4096, 64, 12288};
  const std::vector<std::uint8_t> decays = {1, 0, 1};
  std::vector<std::uint64_t> ends;
  std::size_t n = 0;
  for (std::size_t s : sizes) ends.push_back(n += s);
  for (bool vector : {true, false}) {
    SCOPED_TRACE(vector ? "float4" : "scalar");
    auto p = random_floats(n, -1, 1, 38), g = random_floats(n, -0.5f, 0.5f, 39);
    auto m = random_floats(n, -0.1f, 0.1f, 40), v = random_floats(n, 0, 0.01f, 41);
    const double want_sumsq = cpu::sum_of_squares(g.data(), n);
    auto d_p = to_device(p), d_g = to_device(g), d_m = to_device(m), d_v = to_device(v);
    auto d_pb = poisoned<bf16>(n);
    auto d_ends = to_device(ends);
    auto d_decay = to_device(decays);
    DeviceArray<double> d_sumsq(1), d_scratch(cuda::sum_of_squares_scratch_doubles());
    cuda::sum_of_squares(d_sumsq.get(), d_scratch.get(), d_g.get(), n, kStream);
    const double got_sumsq = from_device(d_sumsq, 1)[0];
    EXPECT_NEAR(got_sumsq, want_sumsq, 1e-6 * want_sumsq);

    const float lr = 1e-2f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, wd = 0.1f;
    const float grad_clip = 1.0f;  // below the norm: clipping is active
    const float bias1 = 1.0f - std::pow(beta1, 3.0f), bias2 = 1.0f - std::pow(beta2, 3.0f);
    const float clip = static_cast<float>(std::min(1.0, grad_clip / (std::sqrt(got_sumsq) + 1e-6)));
    ASSERT_LT(clip, 1.0f);
    std::size_t begin = 0;
    for (std::size_t k = 0; k < sizes.size(); ++k) {
      cpu::adamw_update(p.data() + begin, g.data() + begin, m.data() + begin, v.data() + begin,
                        sizes[k], lr, beta1, beta2, eps, decays[k] ? wd : 0.0f, bias1, bias2, clip);
      begin += sizes[k];
    }
    cuda::DecaySegments segments{d_ends.get(), d_decay.get(), static_cast<int>(ends.size()),
                                 vector};
    cuda::adamw_update(d_p.get(), d_pb.get(), d_g.get(), d_m.get(), d_v.get(), n, segments, lr,
                       beta1, beta2, eps, wd, bias1, bias2, d_sumsq.get(), grad_clip, kStream);
    const auto got_p = from_device(d_p, n);
    BTM_EXPECT_CLOSE(got_p, p, 1e-6, 1e-6);
    BTM_EXPECT_CLOSE(from_device(d_m, n), m, 1e-6, 1e-6);
    BTM_EXPECT_CLOSE(from_device(d_v, n), v, 1e-6, 1e-6);
    const auto got_pb = from_device_bf16(d_pb, n);
    for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(got_pb[i], round_bf16(got_p[i])) << i;
  }
}

// AdamW skips the step of a non-finite gradient on the device: a NaN or infinite sum of squares
// (as sum_of_squares gives for a gradient holding a NaN or an infinity) leaves p, its bf16 copy,
// m and v bitwise unchanged, with and without clipping, on both kernel paths.
TEST(CudaKernels, AdamWSkipsTheStepOfANonFiniteGradient) {
  BTM_SKIP_WITHOUT_GPU();
  const std::vector<std::size_t> sizes = {4096, 64, 12288};
  const std::vector<std::uint8_t> decays = {1, 0, 1};
  std::vector<std::uint64_t> ends;
  std::size_t n = 0;
  for (std::size_t s : sizes) ends.push_back(n += s);
  auto d_ends = to_device(ends);
  auto d_decay = to_device(decays);
  for (bool vector : {true, false})
    for (float bad : {NAN, INFINITY})
      for (float grad_clip : {1.0f, 0.0f}) {
        SCOPED_TRACE(std::string(vector ? "float4" : "scalar") + " bad " + std::to_string(bad) +
                     " clip " + std::to_string(grad_clip));
        const auto p = random_floats(n, -1, 1, 60), m = random_floats(n, -0.1f, 0.1f, 61);
        const auto v = random_floats(n, 0, 0.01f, 62);
        auto g = random_floats(n, -0.5f, 0.5f, 63);
        g[n / 2] = bad;
        auto d_p = to_device(p), d_g = to_device(g), d_m = to_device(m), d_v = to_device(v);
        auto d_pb = to_device_bf16(p);
        const auto pb = from_device_bf16(d_pb, n);
        DeviceArray<double> d_sumsq(1), d_scratch(cuda::sum_of_squares_scratch_doubles());
        cuda::sum_of_squares(d_sumsq.get(), d_scratch.get(), d_g.get(), n, kStream);
        EXPECT_FALSE(std::isfinite(from_device(d_sumsq, 1)[0]));
        cuda::DecaySegments segments{d_ends.get(), d_decay.get(), static_cast<int>(ends.size()),
                                     vector};
        cuda::adamw_update(d_p.get(), d_pb.get(), d_g.get(), d_m.get(), d_v.get(), n, segments,
                           1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.5f, 0.5f, d_sumsq.get(), grad_clip,
                           kStream);
        EXPECT_TRUE(same_bits(from_device(d_p, n), p));
        EXPECT_TRUE(same_bits(from_device(d_m, n), m));
        EXPECT_TRUE(same_bits(from_device(d_v, n), v));
        EXPECT_TRUE(same_bits(from_device_bf16(d_pb, n), pb));
      }
}

// ---- exact fixed-point sums (fixed_point.cu) against fixed_point.hpp, bit for bit ---------

// Values for the fixed-point kernels: random magnitudes over 17 decades (1e-14 .. 1e3, so
// terms below the resolution 2^-40 round to 0 or +-1) and every edge the host arithmetic
// decides, spread over the vector from `shift` on (at the start, the middle and the end):
// both neighbours of the term limit `limit` (for `weight`) in both signs (never the limit
// itself: a term of exactly 2^23 is 2^63 units, one past int64), exact ties of the rounding to
// 2^-40 (round half to even: 1.5, 2.5, -1.5, -2.5, 0.5 units), NaN, +-Inf, +-0, the largest
// float, the smallest normal and subnormal. `rejected` counts the values outside the limit.
std::vector<float> fixed_point_values(std::size_t n, double limit, double weight,
                                      std::uint64_t seed, std::size_t shift,
                                      std::size_t* rejected = nullptr) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) {
    const double magnitude = std::pow(10.0, -14.0 + 17.0 * rng.uniform());
    x = static_cast<float>(rng.uniform() < 0.5 ? -magnitude : magnitude);
  }
  const float at = static_cast<float>(limit / std::abs(weight));
  const float below = std::nextafter(at, 0.0f), above = std::nextafter(at, INFINITY);
  const float unit = std::ldexp(1.0f, -40);  // one unit of the sum (with weight 1)
  const float specials[] = {below,        -below,       above,       -above,       NAN,
                            INFINITY,     -INFINITY,    0.0f,        -0.0f,        FLT_MAX,
                            -FLT_MAX,     FLT_MIN,      1e-45f,      1.5f * unit,  2.5f * unit,
                            -1.5f * unit, -2.5f * unit, 0.5f * unit, -0.5f * unit, 3.0f * unit};
  const std::size_t count = sizeof(specials) / sizeof(specials[0]);
  // Near the end too: shifts below 8 * count keep the callers' vectors apart there as well.
  const std::size_t end_base = n > 9 * count ? n - 9 * count : 0;
  for (std::size_t k = 0; k < count; ++k)
    for (std::size_t base : {std::size_t{0}, n / 2, end_base}) {
      const std::size_t i = base + shift + k;
      if (i < n) v[i] = specials[k];
    }
  if (rejected != nullptr) {
    *rejected = 0;
    for (float x : v)
      if (!(std::abs(static_cast<double>(x) * weight) < limit)) ++*rejected;
  }
  return v;
}

// fixed_accumulate of two micro-batch gradients into a sum that starts non-zero (and a count
// of 7) equals fixed::accumulate bit for bit (the sum and the count), zeroes exactly its range
// of the gradient and touches nothing outside it; fixed_to_floats then equals fixed::to_floats,
// or NaN everywhere while the count is positive. Sizes around and off the block size, at an
// unaligned start (a layer's range inside the flat vector).
TEST(CudaKernels, FixedPointAccumulateAndConvertMatchTheHost) {
  BTM_SKIP_WITHOUT_GPU();
  const std::int64_t M = 3;
  const double limit = fixed::term_limit(M);
  for (std::size_t n : {std::size_t{1}, std::size_t{255}, std::size_t{257}, std::size_t{100003}})
    for (std::size_t offset : {std::size_t{0}, std::size_t{1}}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " offset=" + std::to_string(offset));
      std::size_t bad1 = 0, bad2 = 0;
      const auto g1 = fixed_point_values(n, limit, 1.0, 70 + n, 0, &bad1);
      const auto g2 = fixed_point_values(n, limit, 1.0, 71 + n, 1, &bad2);
      Rng rng(72);
      std::vector<std::int64_t> start(offset + n);
      for (auto& s : start) s = static_cast<std::int64_t>(rng.next_u64() >> 14) - (1ll << 49);
      std::vector<std::int64_t> want(start.begin() + static_cast<std::ptrdiff_t>(offset),
                                     start.end());
      std::int64_t want_count = 7;
      want_count += fixed::accumulate(want, g1, 1.0, limit);
      want_count += fixed::accumulate(want, g2, 1.0, limit);
      EXPECT_EQ(want_count, 7 + static_cast<std::int64_t>(bad1 + bad2));  // the reference itself

      auto d_sum = to_device(start);
      auto d_count = to_device(std::vector<std::int64_t>{7});
      const float sentinel = 42.0f;
      for (const auto* g : {&g1, &g2}) {
        std::vector<float> padded(offset, sentinel);
        padded.insert(padded.end(), g->begin(), g->end());
        auto d_g = to_device(padded);
        cuda::fixed_accumulate(d_sum.get() + offset, d_count.get(), d_g.get() + offset, n, 1.0,
                               limit, kStream);
        const auto after = from_device(d_g, offset + n);
        for (std::size_t i = 0; i < offset; ++i) ASSERT_EQ(after[i], sentinel);
        for (std::size_t i = offset; i < offset + n; ++i) {
          ASSERT_EQ(after[i], 0.0f) << i;
          ASSERT_FALSE(std::signbit(after[i])) << i;
        }
      }
      const auto got = from_device(d_sum, offset + n);
      for (std::size_t i = 0; i < offset; ++i) ASSERT_EQ(got[i], start[i]);
      const std::vector<std::int64_t> got_range(got.begin() + static_cast<std::ptrdiff_t>(offset),
                                                got.end());
      EXPECT_EQ(first_difference(got_range, want), n);
      EXPECT_EQ(from_device(d_count, 1)[0], want_count);

      // Back to floats: a positive count poisons all; without a count (or a zero one) the host's.
      std::vector<float> want_f(n);
      fixed::to_floats(want, want_f, static_cast<double>(M));
      const double factor = fixed::factor_for(static_cast<double>(M));
      auto d_out = poisoned<float>(n);
      cuda::fixed_to_floats(d_out.get(), d_sum.get() + offset, d_count.get(), n, factor, kStream);
      for (float x : from_device(d_out, n)) ASSERT_TRUE(std::isnan(x));
      auto d_zero = to_device(std::vector<std::int64_t>{0});
      for (const std::int64_t* count : {static_cast<const std::int64_t*>(d_zero.get()),
                                        static_cast<const std::int64_t*>(nullptr)}) {
        auto d_f = poisoned<float>(n);
        cuda::fixed_to_floats(d_f.get(), d_sum.get() + offset, count, n, factor, kStream);
        const auto got_f = from_device(d_f, n);
        EXPECT_EQ(first_difference(got_f, want_f), n);
      }
    }
}

// The exact sums of a step convert back to the float mean: a gradient accumulated M = 4 times
// and divided by 4 (a power of two: exact) is to_float(to_fixed(g)), g rounded to 2^-40, with
// a tie rounded to even; the count stays 0.
TEST(CudaKernels, FixedPointMeanOfEqualTermsIsTheRoundedTerm) {
  BTM_SKIP_WITHOUT_GPU();
  const std::size_t n = 4097;
  const std::int64_t M = 4;
  auto g = random_floats(n, -1e-3f, 1e-3f, 73);
  g[0] = std::ldexp(1.5f, -40);  // a tie: rounds to 2 units
  DeviceArray<std::int64_t> d_sum(n + 1);
  BTM_CUDA_CHECK(cudaMemset(d_sum.get(), 0, d_sum.bytes()));
  for (std::int64_t k = 0; k < M; ++k) {
    auto d_g = to_device(g);
    cuda::fixed_accumulate(d_sum.get(), d_sum.get() + n, d_g.get(), n, 1.0, fixed::term_limit(M),
                           kStream);
  }
  auto d_out = poisoned<float>(n);
  cuda::fixed_to_floats(d_out.get(), d_sum.get(), d_sum.get() + n, n,
                        fixed::factor_for(static_cast<double>(M)), kStream);
  const auto got = from_device(d_out, n);
  for (std::size_t i = 0; i < n; ++i)
    ASSERT_EQ(got[i], fixed::to_float(fixed::to_fixed(g[i], 1.0), fixed::factor_for(1.0))) << i;
  EXPECT_EQ(got[0], std::ldexp(2.0f, -40));
  EXPECT_EQ(from_device(d_sum, n + 1)[n], 0);
}

// fixed_weighted_sum (an average straight to floats) and fixed_weighted_add (into a running
// exact sum, over a chunk of the vectors) against fixed::Sum over the same parents and weights
// (powers of two, so the ties reach the rounding, and arbitrary and negative ones): the same
// floats (divisor 1 and 3), the same integers and the same count of rejected terms. Each
// parent has its edge values at other indices, so no index sums two terms near the limit.
TEST(CudaKernels, FixedPointWeightedSumsMatchTheHost) {
  BTM_SKIP_WITHOUT_GPU();
  const std::vector<double> all_weights = {0.5, 0.25,  0.3141592653589793, -0.7, 1.0 / 3.0, 0.125,
                                           1.0, 0.0625};
  for (int K : {1, 3, 8})
    for (std::size_t n : {std::size_t{1}, std::size_t{1000}, std::size_t{65537}}) {
      SCOPED_TRACE("K=" + std::to_string(K) + " n=" + std::to_string(n));
      // The limit of K + 1 terms (the parents and the running sum's vector): a term next to it
      // plus the others' cannot leave int64 (where the host's signed sum would be undefined).
      const double limit = fixed::term_limit(K + 1);
      const std::vector<double> w(all_weights.begin(), all_weights.begin() + K);
      std::vector<std::vector<float>> x;
      std::vector<DeviceArray<float>> d_x;
      std::vector<const float*> ptrs;
      fixed::Sum want(n, limit);
      std::size_t expected_bad = 0;
      for (int k = 0; k < K; ++k) {
        std::size_t bad = 0;
        x.push_back(fixed_point_values(n, limit, w[static_cast<std::size_t>(k)], 80 + k,
                                       static_cast<std::size_t>(k) * 21, &bad));
        expected_bad += bad;
        want.add(x.back(), w[static_cast<std::size_t>(k)]);
        d_x.push_back(to_device(x.back()));
        ptrs.push_back(d_x.back().get());
      }
      EXPECT_EQ(want.bad(), static_cast<std::int64_t>(expected_bad));  // the reference itself
      if (n >= 1000) {
        EXPECT_GT(want.bad(), 0);
      }
      auto d_ptrs = to_device(ptrs);
      auto d_w = to_device(w);

      for (double divisor : {1.0, 3.0}) {
        auto d_out = poisoned<float>(n);
        auto d_count = to_device(std::vector<std::int64_t>{0});
        cuda::fixed_weighted_sum(d_out.get(), d_count.get(), d_ptrs.get(), d_w.get(), K, n, limit,
                                 fixed::factor_for(divisor), kStream);
        EXPECT_EQ(first_difference(from_device(d_out, n), want.result(divisor)), n) << divisor;
        EXPECT_EQ(from_device(d_count, 1)[0], want.bad());
      }

      // Into a sum that already holds another vector's terms, over the chunk [first, n).
      const std::size_t first = n / 3;
      const auto e = random_floats(n, -100, 100, 90);
      fixed::Sum running(n, limit);
      running.add(e, 0.75);
      std::vector<std::int64_t> chunk(running.raw().begin() + static_cast<std::ptrdiff_t>(first),
                                      running.raw().end());
      for (int k = 0; k < K; ++k)
        running.add(x[static_cast<std::size_t>(k)], w[static_cast<std::size_t>(k)]);
      const std::vector<std::int64_t> want_chunk(
          running.raw().begin() + static_cast<std::ptrdiff_t>(first), running.raw().end());
      std::int64_t want_chunk_bad = 0;
      for (int k = 0; k < K; ++k)
        for (std::size_t i = first; i < n; ++i)
          if (!(std::abs(static_cast<double>(x[static_cast<std::size_t>(k)][i]) *
                         w[static_cast<std::size_t>(k)]) < limit))
            ++want_chunk_bad;
      auto d_chunk = to_device(chunk);
      auto d_count = to_device(std::vector<std::int64_t>{5});
      cuda::fixed_weighted_add(d_chunk.get(), d_count.get(), d_ptrs.get(), d_w.get(), K, first,
                               n - first, limit, kStream);
      EXPECT_EQ(first_difference(from_device(d_chunk, n - first), want_chunk), n - first);
      EXPECT_EQ(from_device(d_count, 1)[0], 5 + want_chunk_bad);
    }
}

TEST(CudaKernels, FixedPointWeightedSumOfNoParentsIsZeroAndTooManyAreRefused) {
  BTM_SKIP_WITHOUT_GPU();
  const std::size_t n = 300;
  auto d_out = poisoned<float>(n);
  auto d_count = to_device(std::vector<std::int64_t>{0});
  DeviceArray<const float*> d_ptrs(1);
  DeviceArray<double> d_w(1);
  cuda::fixed_weighted_sum(d_out.get(), d_count.get(), d_ptrs.get(), d_w.get(), 0, n,
                           fixed::term_limit(1), fixed::factor_for(1.0), kStream);
  EXPECT_TRUE(same_bits(from_device(d_out, n), std::vector<float>(n, 0.0f)));
  EXPECT_EQ(from_device(d_count, 1)[0], 0);
  EXPECT_THROW(cuda::fixed_weighted_sum(d_out.get(), d_count.get(), d_ptrs.get(), d_w.get(), 257, n,
                                        fixed::term_limit(1), fixed::factor_for(1.0), kStream),
               std::invalid_argument);
  DeviceArray<std::int64_t> d_sum(n);
  EXPECT_THROW(cuda::fixed_weighted_add(d_sum.get(), d_count.get(), d_ptrs.get(), d_w.get(), -1, 0,
                                        n, fixed::term_limit(1), kStream),
               std::invalid_argument);
}

}  // namespace
}  // namespace btm

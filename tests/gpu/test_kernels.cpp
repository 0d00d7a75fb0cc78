// The kernel harness: every case of the kernel-case table (cuda/kernel_cases.hpp, the table in
// src/cuda/kernel_cases.cpp) checked on the GPU, one parameterised test over the table: each
// CUDA kernel of cuda/kernels.hpp against its fp32 CPU reference (cpu/kernels.hpp) on random
// inputs, forward and backward, under the tolerance the table gives each output (normalised
// errors, an absolute error, or exact bits), and two runs from the same state bitwise equal.
// Inputs are drawn already rounded to bf16, so the reference sees exactly what the kernel sees
// and the error measured is the kernel's own; outputs are poisoned (NaN) before each run, so an
// unwritten element fails. A new case is one entry of the table.
//
// Beside the table: its own consistency and the judge's (no GPU needed), the host-only token
// buckets, and the tests that are no comparison of a kernel with its reference: the GELU
// epilogue refusing aux matrices cuBLASLt cannot take, the epilogue's GELU being the tanh
// approximation (not erf), the fixed-point mean of equal terms, and the weighted sum of no
// parents and of too many.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <iostream>
#include <map>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "btm/cpu/kernels.hpp"
#include "btm/cuda/kernel_cases.hpp"
#include "btm/cuda/kernels.hpp"
#include "btm/util/error.hpp"
#include "btm/util/fixed_point.hpp"
#include "btm/util/rng.hpp"
#include "gpu_test_util.hpp"

namespace btm {
namespace {

using namespace gputest;
using cuda::CaseJudge;
using cuda::kernel_cases;
using cuda::KernelCase;
using cuda::Tolerance;
constexpr cudaStream_t kStream = nullptr;

// ---- the table -----------------------------------------------------------------------------

class CudaKernelCases : public ::testing::TestWithParam<std::size_t> {};

TEST_P(CudaKernelCases, MatchTheCpuReference) {
  BTM_SKIP_WITHOUT_GPU();
  const KernelCase& c = kernel_cases()[GetParam()];
  if (c.unavailable) {
    const std::string why = c.unavailable();
    if (!why.empty()) GTEST_SKIP() << why;
  }
  SCOPED_TRACE(c.name + " (" + c.shape_text() + ")");
  const auto checks = cuda::check_case(c);
  EXPECT_FALSE(checks.empty());
  for (const auto& check : checks) EXPECT_TRUE(check.passed) << check.what << ": " << check.detail;
}

std::vector<std::size_t> case_indices() {
  std::vector<std::size_t> v(kernel_cases().size());
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = i;
  return v;
}

INSTANTIATE_TEST_SUITE_P(Table, CudaKernelCases, ::testing::ValuesIn(case_indices()),
                         [](const ::testing::TestParamInfo<std::size_t>& info) {
                           return kernel_cases()[info.param].name;
                         });

// The table without a GPU: unique names gtest and the JSON lines can carry, a tolerance per
// compared output at most once, sizes for the benchmark's figures, and every launcher of
// cuda/kernels.hpp (and the GEMMs of Blas) covered by at least one case.
TEST(CudaKernelCaseTable, NamesToleranceAndCoverage) {
  const auto& cases = kernel_cases();
  ASSERT_GT(cases.size(), 100u);
  std::set<std::string> names, ops;
  const std::regex name_form("[A-Za-z0-9_]+");
  for (const KernelCase& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_TRUE(names.insert(c.name).second) << "the name is taken";
    EXPECT_TRUE(std::regex_match(c.name, name_form));
    EXPECT_EQ(c.name.rfind(c.op, 0), 0u) << "the name starts with the op";
    EXPECT_TRUE(static_cast<bool>(c.setup));
    EXPECT_FALSE(c.shape.empty());
    EXPECT_GT(c.bytes, 0);
    EXPECT_GE(c.flops, 0);
    std::set<std::string> outputs;
    for (const auto& [output, tolerance] : c.tolerances) {
      EXPECT_TRUE(outputs.insert(output).second) << output << " has two tolerances";
      if (tolerance.kind != Tolerance::Kind::bits) {
        EXPECT_GT(tolerance.max_norm, 0) << output;
        EXPECT_LT(tolerance.max_norm, 0.1) << output;
      }
    }
    ops.insert(c.op);
  }
  for (const char* op : {"float_to_bf16",
                         "bf16_to_float",
                         "mean_of",
                         "sum_of_squares",
                         "encoder_forward",
                         "encoder_backward",
                         "layernorm_forward",
                         "layernorm_backward",
                         "linear_forward",
                         "linear_residual_forward",
                         "linear_forward_float",
                         "linear_backward",
                         "bias_backward",
                         "linear_gelu_forward",
                         "linear_backward_input_dgelu",
                         "gelu_forward",
                         "gelu_backward",
                         "heads_split",
                         "heads_merge",
                         "attention_forward",
                         "attention_backward",
                         "flash_attention_forward",
                         "flash_attention_backward",
                         "crossentropy_forward_backward",
                         "crossentropy_forward",
                         "adamw_update",
                         "adamw_skip",
                         "fixed_accumulate",
                         "fixed_to_floats",
                         "fixed_weighted_sum",
                         "fixed_weighted_add"})
    EXPECT_TRUE(ops.count(op)) << "no case runs " << op;
}

// The judge the table's tolerances go through: bounds met and not, NaN failing every bound,
// bits, an output without a tolerance and a tolerance no comparison used both failing.
TEST(CudaKernelCaseTable, TheJudgeHoldsOutputsToTheirTolerances) {
  const std::vector<float> want = {1.0f, -2.0f, 4.0f};
  const std::vector<float> near = {1.001f, -2.0f, 4.0f}, far = {1.2f, -2.0f, 4.0f};
  const std::vector<float> nan = {NAN, -2.0f, 4.0f}, zero = {-0.0f, 0.0f, 0.0f};
  CaseJudge judge({{"near", Tolerance::close(1e-3, 1e-3)},
                   {"far", Tolerance::close(1e-3, 1e-3)},
                   {"nan", Tolerance::close(1, 1)},
                   {"abs", Tolerance::absolute(2e-3)},
                   {"bits", Tolerance::bits()},
                   {"signed zero", Tolerance::bits()},
                   {"ints", Tolerance::bits()},
                   {"unused", Tolerance::bits()}});
  judge.compare("near", near, want);
  judge.compare("far", far, want);
  judge.compare("nan", nan, want);
  judge.compare("abs", near, want);
  judge.compare("bits", want, want);
  judge.compare("signed zero", zero, std::vector<float>(3, 0.0f));
  judge.compare("ints", std::vector<std::int64_t>{1, 2}, std::vector<std::int64_t>{1, 3});
  judge.compare("no tolerance", want, want);
  judge.expect("property", true);
  const auto checks = judge.finish();
  std::map<std::string, bool> passed;
  for (const auto& c : checks) passed[c.what] = c.passed;
  EXPECT_EQ(checks.size(), 10u);
  EXPECT_TRUE(passed.at("near"));
  EXPECT_FALSE(passed.at("far"));
  EXPECT_FALSE(passed.at("nan"));
  EXPECT_TRUE(passed.at("abs"));
  EXPECT_TRUE(passed.at("bits"));
  EXPECT_FALSE(passed.at("signed zero"));
  EXPECT_FALSE(passed.at("ints"));
  EXPECT_FALSE(passed.at("no tolerance"));
  EXPECT_TRUE(passed.at("property"));
  EXPECT_FALSE(passed.at("unused"));
}

// ---- beside the table ----------------------------------------------------------------------

TEST(CudaKernels, TokenBucketsGroupPositionsByToken) {
  // Host-only logic, but part of the GPU embedding backward: runs everywhere.
  const std::vector<std::int32_t> tokens = {3, 1, 3, 0, 1, 3};
  cuda::TokenBuckets b;
  b.build(tokens.data(), tokens.size(), 5);
  EXPECT_EQ(b.tokens, (std::vector<std::int32_t>{0, 1, 3}));
  EXPECT_EQ(b.offsets, (std::vector<std::int32_t>{0, 1, 3, 6}));
  EXPECT_EQ(b.positions, (std::vector<std::int32_t>{3, 1, 4, 0, 2, 5}));
}

// Aux matrices cuBLASLt cannot take are refused by the GELU epilogue, not silently
// mis-computed: a leading dimension no multiple of 8, a pointer 2 bytes off alignment.
TEST(CudaKernels, GeluEpilogueRefusesAuxMatricesItCannotTake) {
  BTM_SKIP_WITHOUT_GPU();
  cuda::Blas blas;
  const int N = 70, C = 64, H = 4 * C;
  const std::size_t NH = static_cast<std::size_t>(N) * H;
  auto d_inp = to_device_bf16(random_bf16_values(static_cast<std::size_t>(N) * C, 1.0f, 44));
  auto d_w = to_device_bf16(random_bf16_values(static_cast<std::size_t>(H) * C, 0.3f, 45));
  auto d_bias = to_device_bf16(random_bf16_values(H, 0.5f, 46));
  auto d_out = poisoned<bf16>(NH), d_pre = poisoned<bf16>(NH);
  EXPECT_TRUE(cuda::Blas::gelu_epilogue_supported(d_pre.get(), H));
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

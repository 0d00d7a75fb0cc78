// gpu_test_util.hpp: helpers of the GPU tests: the skip when no GPU is visible, bitwise
// comparisons, and (from cuda/case_data.hpp, shared with the kernel cases) random inputs, bf16
// rounding on the host, device copies and the normalised error measures.
#pragma once

#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "btm/cuda/case_data.hpp"
#include "btm/cuda/engine.hpp"
#include "btm/cuda/kernels.hpp"
#include "btm/cuda/memory.hpp"
#include "btm/util/rng.hpp"

// Every GPU test starts with this: CI machines have the toolkit but no GPU.
#define BTM_SKIP_WITHOUT_GPU()                                                         \
  do {                                                                                 \
    if (::btm::cuda_visible_devices() == 0)                                            \
      GTEST_SKIP() << "no CUDA device visible: GPU tests run on the GPU machine only"; \
  } while (0)

namespace btm::gputest {

using cuda::bf16;
using cuda::DeviceArray;

// Inputs, device copies and poisoned outputs: those of the kernel cases (cuda/case_data.hpp).
using cuda::cases::from_device;
using cuda::cases::from_device_bf16;
using cuda::cases::poisoned;
using cuda::cases::random_bf16_values;
using cuda::cases::random_floats;
using cuda::cases::random_tokens;
using cuda::cases::round_bf16;
using cuda::cases::to_device;
using cuda::cases::to_device_bf16;

using cuda::cases::first_difference;  // the index of the first element whose bits differ
using cuda::cases::same_bits;

// Normalised errors of `got` against the reference `want` (NaN anywhere makes both NaN), as
// the kernel cases measure them (cuda::cases::normalised_errors).
using cuda::cases::Errors;
inline Errors compare(std::span<const float> got, std::span<const float> want) {
  EXPECT_EQ(got.size(), want.size());
  return cuda::cases::normalised_errors(got, want);
}

}  // namespace btm::gputest

// EXPECT that both normalised errors are finite and under the thresholds (NaN fails).
#define BTM_EXPECT_CLOSE(got, want, max_norm_tol, rel_l2_tol)                           \
  do {                                                                                  \
    const auto btm_errors_ = ::btm::gputest::compare((got), (want));                    \
    EXPECT_LE(btm_errors_.max_norm, (max_norm_tol)) << "max-normalised error of " #got; \
    EXPECT_LE(btm_errors_.rel_l2, (rel_l2_tol)) << "relative L2 error of " #got;        \
  } while (0)

// gpu_test_util.hpp: helpers of the GPU tests: the skip when no GPU is visible, random inputs,
// bf16 rounding on the host, device copies and the normalised error measures the thresholds
// of the kernel harness are stated in.
#pragma once

#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

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

inline float round_bf16(float x) {
  return __bfloat162float(__float2bfloat16(x));
}

// n values uniform in [-scale, scale), already representable in bf16 (so the CPU reference
// sees exactly what the kernel sees).
inline std::vector<float> random_bf16_values(std::size_t n, float scale, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = round_bf16(static_cast<float>((2.0 * rng.uniform() - 1.0) * scale));
  return v;
}
inline std::vector<float> random_floats(std::size_t n, float lo, float hi, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(lo + (hi - lo) * rng.uniform());
  return v;
}
inline std::vector<std::int32_t> random_tokens(std::size_t n, int vocab, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<std::int32_t> v(n);
  for (auto& t : v)
    t = static_cast<std::int32_t>(rng.next_u64() % static_cast<std::uint64_t>(vocab));
  return v;
}

inline DeviceArray<bf16> to_device_bf16(const std::vector<float>& host) {
  std::vector<bf16> h(host.size());
  for (std::size_t i = 0; i < host.size(); ++i) h[i] = __float2bfloat16(host[i]);
  DeviceArray<bf16> d(std::max<std::size_t>(1, host.size()));
  d.upload(h);
  return d;
}
template <typename T>
DeviceArray<T> to_device(const std::vector<T>& host) {
  DeviceArray<T> d(std::max<std::size_t>(1, host.size()));
  d.upload(host);
  return d;
}
// A device array of n elements, every byte 0xFF first: an element a kernel fails to write
// reads back as NaN (floats, bf16) and fails the comparison.
template <typename T>
DeviceArray<T> poisoned(std::size_t n) {
  DeviceArray<T> d(std::max<std::size_t>(1, n));
  BTM_CUDA_CHECK(cudaMemset(d.get(), 0xFF, d.bytes()));
  return d;
}
inline std::vector<float> from_device_bf16(const DeviceArray<bf16>& d, std::size_t n) {
  BTM_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<bf16> h(n);
  d.download(h);
  std::vector<float> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = __bfloat162float(h[i]);
  return out;
}
template <typename T>
std::vector<T> from_device(const DeviceArray<T>& d, std::size_t n) {
  BTM_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<T> h(n);
  d.download(h);
  return h;
}

// Bitwise equality of two vectors (NaN equals NaN of the same bits, 0.0 differs from -0.0).
template <typename T>
bool same_bits(std::span<const T> a, std::span<const T> b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size_bytes()) == 0);
}
template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return same_bits(std::span<const T>(a), std::span<const T>(b));
}
// The index of the first element whose bits differ, or the size when none does.
template <typename T>
std::size_t first_difference(const std::vector<T>& a, const std::vector<T>& b) {
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return i;
  return std::min(a.size(), b.size());
}

// Normalised errors of `got` against the reference `want` (NaN anywhere makes both NaN).
struct Errors {
  double max_norm = 0;  // max |got - want| / max |want|
  double rel_l2 = 0;    // ||got - want|| / ||want||
};
inline Errors compare(std::span<const float> got, std::span<const float> want) {
  EXPECT_EQ(got.size(), want.size());
  double max_diff = 0, max_ref = 0, diff2 = 0, ref2 = 0;
  bool nan = false;
  for (std::size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    if (!std::isfinite(got[i])) nan = true;
    max_diff = std::max(max_diff, std::abs(d));
    max_ref = std::max(max_ref, std::abs(static_cast<double>(want[i])));
    diff2 += d * d;
    ref2 += static_cast<double>(want[i]) * want[i];
  }
  if (nan) return {NAN, NAN};
  const double tiny = 1e-30;
  return {max_diff / std::max(max_ref, tiny), std::sqrt(diff2) / std::max(std::sqrt(ref2), tiny)};
}

}  // namespace btm::gputest

// EXPECT that both normalised errors are finite and under the thresholds (NaN fails).
#define BTM_EXPECT_CLOSE(got, want, max_norm_tol, rel_l2_tol)                           \
  do {                                                                                  \
    const auto btm_errors_ = ::btm::gputest::compare((got), (want));                    \
    EXPECT_LE(btm_errors_.max_norm, (max_norm_tol)) << "max-normalised error of " #got; \
    EXPECT_LE(btm_errors_.rel_l2, (rel_l2_tol)) << "relative L2 error of " #got;        \
  } while (0)

// case_data.hpp: the host side of the kernel cases (cuda/kernel_cases.hpp) and of the GPU tests:
// seeded random inputs already rounded to bf16 (so the CPU reference sees exactly what a kernel
// sees), device copies, outputs poisoned before a run, and the error measures the tolerances
// are stated in. Only in builds with BTM_HAVE_CUDA.
#pragma once

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "btm/cuda/check.hpp"
#include "btm/cuda/kernels/bf16.hpp"
#include "btm/cuda/memory.hpp"
#include "btm/util/rng.hpp"

namespace btm::cuda::cases {

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

inline std::vector<bf16> to_bf16(const std::vector<float>& host) {
  std::vector<bf16> h(host.size());
  for (std::size_t i = 0; i < host.size(); ++i) h[i] = __float2bfloat16(host[i]);
  return h;
}
inline DeviceArray<bf16> to_device_bf16(const std::vector<float>& host) {
  DeviceArray<bf16> d(std::max<std::size_t>(1, host.size()));
  d.upload(to_bf16(host));
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
inline void poison(void* device, std::size_t bytes) {
  BTM_CUDA_CHECK(cudaMemset(device, 0xFF, bytes));
}
template <typename T>
DeviceArray<T> poisoned(std::size_t n) {
  DeviceArray<T> d(std::max<std::size_t>(1, n));
  poison(d.get(), d.bytes());
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
// The raw bytes of the first n elements (after a device synchronisation).
template <typename T>
std::vector<std::byte> device_bytes(const DeviceArray<T>& d, std::size_t n) {
  BTM_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<std::byte> h(n * sizeof(T));
  BTM_CUDA_CHECK(cudaMemcpy(h.data(), d.get(), h.size(), cudaMemcpyDeviceToHost));
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
std::size_t first_difference(std::span<const T> a, std::span<const T> b) {
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return i;
  return std::min(a.size(), b.size());
}
template <typename T>
std::size_t first_difference(const std::vector<T>& a, const std::vector<T>& b) {
  return first_difference(std::span<const T>(a), std::span<const T>(b));
}

// Normalised errors of `got` against the reference `want` (NaN or an infinity anywhere in got
// makes both NaN, which fails every bound). Sizes must match (the caller checks).
struct Errors {
  double max_norm = 0;  // max |got - want| / max |want|
  double rel_l2 = 0;    // ||got - want|| / ||want||
  double max_abs = 0;   // max |got - want|
};
template <typename T>
Errors normalised_errors(std::span<const T> got, std::span<const T> want) {
  double max_diff = 0, max_ref = 0, diff2 = 0, ref2 = 0;
  bool nan = false;
  for (std::size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    const double d = static_cast<double>(got[i]) - static_cast<double>(want[i]);
    if (!std::isfinite(static_cast<double>(got[i]))) nan = true;
    max_diff = std::max(max_diff, std::abs(d));
    max_ref = std::max(max_ref, std::abs(static_cast<double>(want[i])));
    diff2 += d * d;
    ref2 += static_cast<double>(want[i]) * static_cast<double>(want[i]);
  }
  if (nan) return {NAN, NAN, NAN};
  const double tiny = 1e-30;
  return {max_diff / std::max(max_ref, tiny), std::sqrt(diff2) / std::max(std::sqrt(ref2), tiny),
          max_diff};
}

}  // namespace btm::cuda::cases

// fixed_point.cu: the exact 64-bit fixed-point sums of fixed_point.hpp on the device
// (cuda/kernels/fixed_point.hpp): a micro-batch gradient into a step's sum, the step's sum back
// to floats, and weighted sums of parameter vectors (averages). Each term is the host's
// llrint((double(x) * w) * 2^40): the products are __dmul_rn and the rounding __double2ll_rn
// (round to nearest even, as llrint), so no FMA contraction or other rounding can change a bit;
// integer addition is associative, so the sums equal the host's in any order. The sums
// themselves use no atomics; only the counts of rejected terms do (one atomicAdd per block).
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "btm/cuda/check.hpp"
#include "btm/cuda/kernels/fixed_point.hpp"
#include "btm/util/fixed_point.hpp"

namespace btm::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
using u64 = unsigned long long;

unsigned grid_for(std::size_t work) {
  const std::size_t needed = (work + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::clamp<std::size_t>(needed, 1, 65536));
}

// One term of the sum as fixed_point.hpp forms it; false (and no term) where
// !(|double(x) * w| < limit), which also catches NaN and infinities.
__device__ __forceinline__ bool fixed_term(float x, double w, double limit, u64& term) {
  const double t = __dmul_rn(static_cast<double>(x), w);
  if (!(fabs(t) < limit)) return false;
  // Two's complement: adding as unsigned wraps exactly as the host's int64 does.
  term = static_cast<u64>(__double2ll_rn(__dmul_rn(t, fixed::kScale)));
  return true;
}

__device__ __forceinline__ float fixed_to_float(long long sum, double factor) {
  return __double2float_rn(__dmul_rn(__ll2double_rn(sum), factor));
}

// Adds the block's rejected-term counts into *count (the only atomic; the order of integer
// additions does not matter). Every thread of the block must call it.
__device__ void add_block_count(std::int64_t* count, u64 mine) {
  __shared__ u64 warps[kThreads / kWarp];
  for (int offset = kWarp / 2; offset > 0; offset >>= 1)
    mine += __shfl_down_sync(0xffffffffu, mine, offset);
  const int lane = static_cast<int>(threadIdx.x) % kWarp, warp = threadIdx.x / kWarp;
  if (lane == 0) warps[warp] = mine;
  __syncthreads();
  if (threadIdx.x == 0) {
    u64 total = 0;
    for (int w = 0; w < static_cast<int>(blockDim.x) / kWarp; ++w) total += warps[w];
    if (total > 0 && count != nullptr) atomicAdd(reinterpret_cast<u64*>(count), total);
  }
}

__global__ void __launch_bounds__(kThreads)
    accumulate_kernel(std::int64_t* sum, std::int64_t* count, float* g, std::size_t n,
                      double weight, double limit) {
  u64 rejected = 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const float x = g[i];
    g[i] = 0.0f;  // the next micro-batch's backward accumulates from zero
    u64 term;
    if (fixed_term(x, weight, limit, term))
      sum[i] = static_cast<std::int64_t>(static_cast<u64>(sum[i]) + term);
    else
      ++rejected;
  }
  add_block_count(count, rejected);
}

__global__ void to_floats_kernel(float* out, const std::int64_t* sum, const std::int64_t* count,
                                 std::size_t n, double factor) {
  const bool poisoned = count != nullptr && *count > 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    out[i] = poisoned ? __int_as_float(0x7fc00000) : fixed_to_float(sum[i], factor);
}

// sum_k to_fixed(x[k][offset + i], w[k]) for i in [0, n): to floats in `out` (kToFloat) or
// added into sum[i]. One pass over the parents per element; the K pointers and weights are
// read from device memory once per block.
constexpr int kMaxParentsInShared = 256;
template <bool kToFloat>
__global__ void __launch_bounds__(kThreads)
    weighted_sum_kernel(float* out, std::int64_t* sum, std::int64_t* count, const float* const* x,
                        const double* w, int K, std::size_t offset, std::size_t n, double limit,
                        double factor) {
  __shared__ const float* parents[kMaxParentsInShared];
  __shared__ double weights[kMaxParentsInShared];
  for (int k = threadIdx.x; k < K; k += blockDim.x) {
    parents[k] = x[k] + offset;
    weights[k] = w[k];
  }
  __syncthreads();
  u64 rejected = 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    u64 acc = kToFloat ? 0 : static_cast<u64>(sum[i]);
    for (int k = 0; k < K; ++k) {
      u64 term;
      if (fixed_term(parents[k][i], weights[k], limit, term))
        acc += term;
      else
        ++rejected;
    }
    if constexpr (kToFloat)
      out[i] = fixed_to_float(static_cast<long long>(acc), factor);
    else
      sum[i] = static_cast<std::int64_t>(acc);
  }
  add_block_count(count, rejected);
}

void check_parents(int K) {
  if (K < 0 || K > kMaxParentsInShared)
    throw std::invalid_argument("fixed-point weighted sum: " + std::to_string(K) +
                                " parents, at most " + std::to_string(kMaxParentsInShared));
}

}  // namespace

void fixed_accumulate(std::int64_t* sum, std::int64_t* count, float* g, std::size_t n,
                      double weight, double limit, cudaStream_t stream) {
  if (n == 0) return;
  accumulate_kernel<<<grid_for(n), kThreads, 0, stream>>>(sum, count, g, n, weight, limit);
  BTM_CUDA_CHECK_LAUNCH();
}

void fixed_to_floats(float* out, const std::int64_t* sum, const std::int64_t* count, std::size_t n,
                     double factor, cudaStream_t stream) {
  if (n == 0) return;
  to_floats_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, sum, count, n, factor);
  BTM_CUDA_CHECK_LAUNCH();
}

void fixed_weighted_sum(float* out, std::int64_t* count, const float* const* x, const double* w,
                        int K, std::size_t n, double limit, double factor, cudaStream_t stream) {
  check_parents(K);
  if (n == 0) return;
  weighted_sum_kernel<true>
      <<<grid_for(n), kThreads, 0, stream>>>(out, nullptr, count, x, w, K, 0, n, limit, factor);
  BTM_CUDA_CHECK_LAUNCH();
}

void fixed_weighted_add(std::int64_t* sum, std::int64_t* count, const float* const* x,
                        const double* w, int K, std::size_t offset, std::size_t n, double limit,
                        cudaStream_t stream) {
  check_parents(K);
  if (n == 0) return;
  weighted_sum_kernel<false>
      <<<grid_for(n), kThreads, 0, stream>>>(nullptr, sum, count, x, w, K, offset, n, limit, 0.0);
  BTM_CUDA_CHECK_LAUNCH();
}

}  // namespace btm::cuda

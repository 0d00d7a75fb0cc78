// fixed_point.hpp: exact sums in 64-bit fixed point on the device (kernels/fixed_point.cu).
#pragma once

#include <cstddef>
#include <cstdint>

#include "btm/cuda/kernels/bf16.hpp"

namespace btm::cuda {

// The arithmetic of fixed_point.hpp on the device, bit for bit: a term is
// llrint((double(x) * w) * 2^40) (no FMA contraction), a term with !(|double(x) * w| < limit)
// (also NaN and infinities) is left out and counted in *count (an int64 on the device, added
// to with one atomic per block; the sums use none), a sum back to float is
// float(double(sum) * factor) with factor = fixed::factor_for(divisor). Integer sums do not
// depend on the order of their terms, so any grid gives the host's bits.

// A micro-batch gradient into a step's exact sum (fixed::accumulate of g with `weight`), and
// g[i] = 0 once read, so the next micro-batch's backward starts from zero: one pass of read g,
// write 0, read-modify-write sum.
void fixed_accumulate(std::int64_t* sum, std::int64_t* count, float* g, std::size_t n,
                      double weight, double limit, cudaStream_t stream);
// out[i] = fixed::to_float(sum[i], factor); NaN everywhere instead when count is not null and
// *count > 0 (read on the device: no host synchronisation).
void fixed_to_floats(float* out, const std::int64_t* sum, const std::int64_t* count, std::size_t n,
                     double factor, cudaStream_t stream);
// A weighted sum of K vectors x[0..K) (a device array of K device pointers, weights w a device
// array of K doubles; K <= 256): out[i] = to_float(sum_k to_fixed(x[k][i], w[k]), factor), the
// terms outside `limit` left out and counted in *count. out may not alias any x[k].
void fixed_weighted_sum(float* out, std::int64_t* count, const float* const* x, const double* w,
                        int K, std::size_t n, double limit, double factor, cudaStream_t stream);
// The same terms added into an exact sum: sum[i] += sum_k to_fixed(x[k][offset + i], w[k]) for
// i in [0, n) (offset: a chunk of longer vectors).
void fixed_weighted_add(std::int64_t* sum, std::int64_t* count, const float* const* x,
                        const double* w, int K, std::size_t offset, std::size_t n, double limit,
                        cudaStream_t stream);

}  // namespace btm::cuda

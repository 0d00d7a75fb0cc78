// reductions.cu: the mean of the losses and the gradient's sum of squares
// (cuda/kernels/reductions.hpp), in double, in a fixed order: the sum of squares writes one
// partial sum per block that a second kernel adds in block order (no atomics), so the results
// are bitwise reproducible.
#include <cstddef>

#include "btm/cuda/check.hpp"
#include "btm/cuda/kernels/reductions.hpp"
#include "common.cuh"

namespace btm::cuda {
namespace {

constexpr int kSumSquaresBlocks = 1024;

// One block of 1024 threads; strided per-thread sums, then a fixed tree.
__global__ void mean_kernel(float* out, const float* values, int n) {
  __shared__ double partial[1024];
  double s = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += values[i];
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int width = blockDim.x / 2; width > 0; width >>= 1) {
    if (static_cast<int>(threadIdx.x) < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[0] = static_cast<float>(partial[0] / n);
}

__global__ void sum_of_squares_partial_kernel(double* partial, const float* g, std::size_t n) {
  __shared__ double shared[512];
  float s = 0;
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    s += g[i] * g[i];
  shared[threadIdx.x] = s;
  __syncthreads();
  for (int width = blockDim.x / 2; width > 0; width >>= 1) {
    if (static_cast<int>(threadIdx.x) < width) shared[threadIdx.x] += shared[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = shared[0];
}

__global__ void sum_of_squares_final_kernel(double* out, const double* partial, int count) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double s = 0;
  for (int i = 0; i < count; ++i) s += partial[i];
  out[0] = s;
}

}  // namespace

void mean_of(float* out, const float* values, int n, cudaStream_t stream) {
  mean_kernel<<<1, 1024, 0, stream>>>(out, values, n);
  BTM_CUDA_CHECK_LAUNCH();
}

std::size_t sum_of_squares_scratch_doubles() {
  return kSumSquaresBlocks;
}

void sum_of_squares(double* out, double* scratch, const float* g, std::size_t n,
                    cudaStream_t stream) {
  sum_of_squares_partial_kernel<<<kSumSquaresBlocks, 512, 0, stream>>>(scratch, g, n);
  BTM_CUDA_CHECK_LAUNCH();
  sum_of_squares_final_kernel<<<1, 32, 0, stream>>>(out, scratch, kSumSquaresBlocks);
  BTM_CUDA_CHECK_LAUNCH();
}

}  // namespace btm::cuda

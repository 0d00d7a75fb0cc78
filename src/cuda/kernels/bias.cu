// bias.cu: the bias gradient, column sums of dout (cuda/kernels/bias.hpp): per row chunk partial
// sums that a second kernel adds in chunk order (no atomics), so the results are bitwise
// reproducible.
#include <algorithm>
#include <cstddef>

#include "btm/cuda/check.hpp"
#include "btm/cuda/kernels/bias.hpp"
#include "common.cuh"

namespace btm::cuda {
namespace {

constexpr int kMaxBiasChunks = 512;  // row chunks of the bias gradient (scratch rows)

// Block (32, kBiasLanes): lane x owns P adjacent columns (P == 8: one 16-byte load per row, so a
// warp reads 512 contiguous bytes of a row); row lane y sums rows r0 + y, r0 + y + kBiasLanes, ...
// of the block's chunk in order, kBiasUnroll loads in flight. The lanes' sums are then added in
// lane order: one partial sum per chunk and column.
constexpr int kBiasLanes = 8;
constexpr int kBiasThreads = kWarp * kBiasLanes;
constexpr int kBiasUnroll = 4;

template <int P>
__global__ void __launch_bounds__(kBiasThreads)
    bias_backward_partial_kernel(float* partial, const bf16* dout, int N, int OC,
                                 int rows_per_chunk) {
  constexpr int kColumns = kWarp * P;  // columns per block
  __shared__ float sums[kBiasLanes][kColumns];
  const int c0 = blockIdx.x * kColumns;
  const int c = c0 + threadIdx.x * P;  // P divides OC: a pack is all in or all out
  const int r0 = blockIdx.y * rows_per_chunk;
  const int r1 = min(N, r0 + rows_per_chunk);
  float acc[P] = {};
  if (c < OC) {
    const bf16* col = dout + c;
    int r = r0 + threadIdx.y;
    for (; r + (kBiasUnroll - 1) * kBiasLanes < r1; r += kBiasUnroll * kBiasLanes) {
      float v[kBiasUnroll][P];
#pragma unroll
      for (int u = 0; u < kBiasUnroll; ++u)
        load_bf16<P>(v[u], col + static_cast<std::size_t>(r + u * kBiasLanes) * OC);
#pragma unroll
      for (int u = 0; u < kBiasUnroll; ++u)
#pragma unroll
        for (int i = 0; i < P; ++i) acc[i] += v[u][i];
    }
    for (; r < r1; r += kBiasLanes) {
      float v[P];
      load_bf16<P>(v, col + static_cast<std::size_t>(r) * OC);
#pragma unroll
      for (int i = 0; i < P; ++i) acc[i] += v[i];
    }
  }
#pragma unroll
  for (int i = 0; i < P; ++i) sums[threadIdx.y][threadIdx.x * P + i] = acc[i];
  __syncthreads();
  for (int t = threadIdx.y * kWarp + threadIdx.x; t < kColumns && c0 + t < OC; t += kBiasThreads) {
    float total = 0;
    for (int y = 0; y < kBiasLanes; ++y) total += sums[y][t];
    partial[static_cast<std::size_t>(blockIdx.y) * OC + c0 + t] = total;
  }
}

// Block (32, kReduceLanes) as the LayerNorm's: lane y sums chunks y, y + kReduceLanes, ... (many
// chunks: the partial kernel fills the GPU with row chunks), then lane 0 adds the lane sums.
__global__ void bias_backward_reduce_kernel(float* dbias, const float* partial, int chunks,
                                            int OC) {
  __shared__ float sums[kReduceLanes][kWarp + 1];
  const int c = blockIdx.x * kWarp + threadIdx.x;
  float acc = 0;
  if (c < OC)
    for (int i = threadIdx.y; i < chunks; i += kReduceLanes)
      acc += partial[static_cast<std::size_t>(i) * OC + c];
  sums[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || c >= OC) return;
  float total = 0;
  for (int i = 0; i < kReduceLanes; ++i) total += sums[i][threadIdx.x];
  dbias[c] += total;
}

}  // namespace

std::size_t bias_backward_scratch_floats(int OC) {
  return static_cast<std::size_t>(kMaxBiasChunks) * OC;
}

namespace {
// Row chunks enough for one full wave of partial-kernel blocks (each with kBiasUnroll loads per
// thread in flight: enough to keep HBM busy), at least 32 rows each.
template <int P>
void launch_bias_backward(float* dbias, float* scratch, const bf16* dout, int N, int OC,
                          cudaStream_t stream) {
  const auto kernel = bias_backward_partial_kernel<P>;
  int per_sm = 0;
  BTM_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kBiasThreads, 0));
  const int column_blocks = (OC + kWarp * P - 1) / (kWarp * P);
  const int wave = std::max(1, per_sm) * sm_count();
  const int target_chunks = std::clamp(wave / column_blocks, 1, kMaxBiasChunks);
  const int rows_per_chunk = std::max(32, (N + target_chunks - 1) / target_chunks);
  const int chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
  kernel<<<dim3(column_blocks, chunks), dim3(kWarp, kBiasLanes), 0, stream>>>(scratch, dout, N, OC,
                                                                              rows_per_chunk);
  BTM_CUDA_CHECK_LAUNCH();
  bias_backward_reduce_kernel<<<(OC + kWarp - 1) / kWarp, dim3(kWarp, kReduceLanes), 0, stream>>>(
      dbias, scratch, chunks, OC);
  BTM_CUDA_CHECK_LAUNCH();
}
}  // namespace

void bias_backward(float* dbias, float* scratch, const bf16* dout, int N, int OC,
                   cudaStream_t stream) {
  if (N <= 0 || OC <= 0) return;
  if (OC % 8 == 0 && aligned16(dout))
    launch_bias_backward<8>(dbias, scratch, dout, N, OC, stream);
  else
    launch_bias_backward<1>(dbias, scratch, dout, N, OC, stream);
}

}  // namespace btm::cuda

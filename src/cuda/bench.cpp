// bench.cpp: device-side helpers of `btm bench` (cuda_bench.hpp).
#include "btm/cuda_bench.hpp"

#include <cuda_runtime.h>

#include <chrono>

#include "btm/cuda_check.hpp"

namespace btm {

std::size_t cuda_memory_used_bytes() {
  std::size_t free_bytes = 0, total_bytes = 0;
  BTM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return total_bytes - free_bytes;
}

double cuda_time_allreduce_ms(Communicator& comm, std::size_t count, int iterations, int warmup) {
  std::int64_t* buffer = nullptr;
  BTM_CUDA_CHECK(cudaMalloc(&buffer, count * sizeof(std::int64_t)));
  BTM_CUDA_CHECK(cudaMemset(buffer, 0, count * sizeof(std::int64_t)));
  for (int i = 0; i < warmup; ++i) comm.allreduce_sum(buffer, count);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) comm.allreduce_sum(buffer, count);  // each call synchronises
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  BTM_CUDA_CHECK(cudaFree(buffer));
  return ms / iterations;
}

}  // namespace btm

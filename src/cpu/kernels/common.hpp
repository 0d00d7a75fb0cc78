// common.hpp: what the fp32 CPU reference kernels of src/cpu/kernels/ share: the partitions
// of work that do not depend on the thread count (a thread's share of a range, fixed blocks of
// rows for sgemm) and OpenBLAS kept on one thread inside OpenMP loops. Internal to src/cpu.
#pragma once

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstddef>

namespace btm::cpu {
namespace {

using std::size_t;

// The contiguous share [begin, end) of [0, n) of the calling thread of an OpenMP team.
struct Range {
  size_t begin, end;
};
inline Range thread_share(size_t n) {
  const size_t threads = static_cast<size_t>(omp_get_num_threads());
  const size_t id = static_cast<size_t>(omp_get_thread_num());
  return {n * id / threads, n * (id + 1) / threads};
}

// Matmuls are cut into blocks of this many rows (or output channels) whatever the thread count,
// so each sgemm call, and therefore its rounding, is the same for 1 or 16 threads.
constexpr size_t kBlock = 64;
inline size_t block_count(size_t n) {
  return (n + kBlock - 1) / kBlock;
}
inline Range block(size_t k, size_t n) {
  return {k * kBlock, std::min(n, (k + 1) * kBlock)};
}

// Runs OpenBLAS single-threaded while alive: the kernels call sgemm from inside OpenMP loops,
// where OpenBLAS's own threads would only oversubscribe the cores.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas() : saved_(openblas_get_num_threads()) { openblas_set_num_threads(1); }
  ~SingleThreadedBlas() { openblas_set_num_threads(saved_); }
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;

 private:
  int saved_;
};

}  // namespace
}  // namespace btm::cpu

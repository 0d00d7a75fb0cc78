// cuda_bench.hpp: the device-side helpers of `btm bench` (src/bench_command.cpp): device memory
// in use and the timing of an all-reduce on a device buffer. Only in builds with BTM_HAVE_CUDA.
#pragma once

#include <cstddef>

#include "btm/comm.hpp"

namespace btm {

// Device bytes in use on the current device (cudaMemGetInfo: total - free, the CUDA context
// and other processes on the same GPU included).
std::size_t cuda_memory_used_bytes();

// Mean milliseconds of one in-place sum of `count` int64 (a step's gradient sums) over the device
// communicator `comm` (a device buffer is allocated here), after `warmup` untimed calls.
double cuda_time_allreduce_ms(Communicator& comm, std::size_t count, int iterations, int warmup);

}  // namespace btm

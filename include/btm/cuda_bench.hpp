// cuda_bench.hpp: the training-throughput benchmark of the CUDA engine (`btm bench` prints its
// line): full training steps (forward_backward + optimizer_step on random tokens) timed after a
// warm-up, reported as one JSON line comparable with shared/bench/torch_gpt.py's.
// Only in builds with BTM_HAVE_CUDA.
#pragma once

#include <cstddef>
#include <ostream>

#include "btm/comm.hpp"
#include "btm/config.hpp"
#include "btm/cuda_engine.hpp"

namespace btm {

// Runs `warmup` untimed and `steps` timed training steps of `model` with `batch` sequences of
// model.context tokens on the current CUDA device and writes one JSON line to `out`:
// system, params, layers, dim, heads, seq, batch, vocab, steps, step_ms (mean), step_ms_median,
// tokens_per_s, mfu (train_flops_per_token x tokens/s over peak_tflops, the 6N + 12 L d T
// convention), loss_first and loss (the first and last step), gpu_mem_used_gib (cudaMemGetInfo:
// total - free after the run, the CUDA context included), engine_alloc_gib (the engine's own
// allocations), attention (the kernel used), and two parts of a step timed alone: forward_ms
// (token_logprobs: the forward with fp32 logits) and optimizer_ms (norm + AdamW).
void bench_engine_json(const ModelConfig& model, int batch, int steps, int warmup,
                       double peak_tflops, std::ostream& out,
                       CudaAttention attention = CudaAttention::Auto);

// Device bytes in use on the current device (cudaMemGetInfo: total - free, the CUDA context
// and other processes on the same GPU included).
std::size_t cuda_memory_used_bytes();

// Mean milliseconds of one in-place sum of `count` floats over the device communicator `comm`
// (a device buffer is allocated here), after `warmup` untimed calls.
double cuda_time_allreduce_ms(Communicator& comm, std::size_t count, int iterations, int warmup);

}  // namespace btm

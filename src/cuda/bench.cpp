// bench.cpp: the CUDA engine's training-throughput benchmark (cuda_bench.hpp). Each step ends
// in optimizer_step, which synchronises the engine's stream once (it returns the gradient
// norm), so a host clock read after it brackets exactly the GPU work of the step.
#include "btm/cuda_bench.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <iomanip>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "btm/cuda_check.hpp"
#include "btm/cuda_engine.hpp"
#include "btm/engine.hpp"
#include "btm/params.hpp"
#include "btm/rng.hpp"

namespace btm {

void bench_engine_json(const ModelConfig& model, int batch, int steps, int warmup,
                       double peak_tflops, std::ostream& out, CudaAttention attention) {
  if (batch < 1 || steps < 1 || warmup < 0 || peak_tflops <= 0)
    throw std::invalid_argument("bench: needs batch >= 1, steps >= 1, warmup >= 0, peak > 0");
  int device = 0;
  BTM_CUDA_CHECK(cudaGetDevice(&device));
  cudaDeviceProp properties{};
  BTM_CUDA_CHECK(cudaGetDeviceProperties(&properties, device));

  auto engine = make_cuda_engine(model, device, batch, attention);
  const ParamLayout& layout = engine->layout();
  std::vector<float> params(layout.total());
  init_gpt2(layout, params, 1234);
  engine->set_params(params);

  const int T = model.context;
  const std::size_t tokens = static_cast<std::size_t>(batch) * T;
  std::vector<std::int32_t> inputs(tokens), targets(tokens);
  Rng rng(42);
  for (std::size_t i = 0; i < tokens; ++i) {
    inputs[i] =
        static_cast<std::int32_t>(rng.next_u64() % static_cast<std::uint64_t>(model.vocab_size));
    targets[i] =
        static_cast<std::int32_t>(rng.next_u64() % static_cast<std::uint64_t>(model.vocab_size));
  }
  const Batch data{inputs.data(), targets.data(), batch, T};
  AdamWStep update;
  update.lr = 6e-4f;
  float loss = 0, first_loss = 0;
  auto step = [&](std::int64_t t) {
    engine->zero_grad();
    loss = engine->forward_backward(data, 1.0f, nullptr);
    if (t == 1) first_loss = loss;
    update.t = t;
    engine->optimizer_step(update);
  };
  for (int i = 0; i < warmup; ++i) step(i + 1);

  using Clock = std::chrono::steady_clock;
  std::vector<double> step_ms;
  const auto start = Clock::now();
  auto last = start;
  for (int i = 0; i < steps; ++i) {
    step(warmup + i + 1);
    const auto now = Clock::now();
    step_ms.push_back(std::chrono::duration<double, std::milli>(now - last).count());
    last = now;
  }
  const double total_ms = std::chrono::duration<double, std::milli>(last - start).count();
  const double mean_ms = total_ms / steps;
  std::sort(step_ms.begin(), step_ms.end());
  const double median_ms = step_ms[step_ms.size() / 2];
  const double tokens_per_s = static_cast<double>(tokens) / (mean_ms * 1e-3);
  const double mfu = tokens_per_s * train_flops_per_token(layout) / (peak_tflops * 1e12);

  // Parts of a step, each timed alone (mean of 3 after the steps above warmed everything up).
  using Ms = std::chrono::duration<double, std::milli>;
  std::vector<float> logprobs(tokens);
  auto t0 = Clock::now();
  for (int i = 0; i < 3; ++i) engine->token_logprobs(data, logprobs.data());
  const double forward_ms = Ms(Clock::now() - t0).count() / 3;
  t0 = Clock::now();
  for (int i = 0; i < 3; ++i) engine->optimizer_step(update);
  const double optimizer_ms = Ms(Clock::now() - t0).count() / 3;

  std::size_t free_bytes = 0, total_bytes = 0;
  BTM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

  std::ostringstream line;
  line << std::fixed;
  line << "{\"system\": \"btm-cuda\", \"device\": \"" << properties.name << "\""
       << ", \"attention\": \"" << cuda_engine_attention(*engine) << "\""
       << ", \"params\": " << layout.total() << ", \"layers\": " << model.n_layer
       << ", \"dim\": " << model.d_model << ", \"heads\": " << model.n_head << ", \"seq\": " << T
       << ", \"batch\": " << batch << ", \"vocab\": " << model.vocab_size
       << ", \"steps\": " << steps << std::setprecision(2) << ", \"step_ms\": " << mean_ms
       << ", \"step_ms_median\": " << median_ms << ", \"forward_ms\": " << forward_ms
       << ", \"optimizer_ms\": " << optimizer_ms << std::setprecision(0)
       << ", \"tokens_per_s\": " << tokens_per_s << std::setprecision(4) << ", \"mfu\": " << mfu
       << ", \"loss_first\": " << first_loss << ", \"loss\": " << loss << std::setprecision(2)
       << ", \"gpu_mem_used_gib\": " << static_cast<double>(total_bytes - free_bytes) / kGiB
       << ", \"engine_alloc_gib\": "
       << static_cast<double>(cuda_engine_allocated_bytes(*engine)) / kGiB << "}";
  out << line.str() << std::endl;
}

std::size_t cuda_memory_used_bytes() {
  std::size_t free_bytes = 0, total_bytes = 0;
  BTM_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return total_bytes - free_bytes;
}

double cuda_time_allreduce_ms(Communicator& comm, std::size_t count, int iterations, int warmup) {
  float* buffer = nullptr;
  BTM_CUDA_CHECK(cudaMalloc(&buffer, count * sizeof(float)));
  BTM_CUDA_CHECK(cudaMemset(buffer, 0, count * sizeof(float)));
  for (int i = 0; i < warmup; ++i) comm.allreduce_sum(buffer, count);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) comm.allreduce_sum(buffer, count);  // each call synchronises
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  BTM_CUDA_CHECK(cudaFree(buffer));
  return ms / iterations;
}

}  // namespace btm

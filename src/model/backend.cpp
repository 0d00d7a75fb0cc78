#include "btm/model/backend.hpp"

#include <chrono>

#include "btm/util/error.hpp"

namespace btm {

double Backend::time_allreduce_ms(Communicator& comm, std::size_t count, int iterations,
                                  int warmup) const {
  std::vector<std::int64_t> buffer(count, 0);
  for (int i = 0; i < warmup; ++i) comm.allreduce_sum(buffer.data(), count);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) comm.allreduce_sum(buffer.data(), count);
  const std::chrono::duration<double, std::milli> ms = std::chrono::steady_clock::now() - start;
  return ms.count() / iterations;
}

void Backend::bench_kernel_cases(const std::string&, int, int, std::ostream&) const {
  throw InputError("bench --cases kernels: the " + std::string(word_of(device())) +
                   " backend has no kernel cases to time (use run.device = cuda)");
}

Backends::Backends(std::vector<std::unique_ptr<Backend>> list) : list_(std::move(list)) {}

const Backend* Backends::find(Device device) const {
  for (const auto& b : list_)
    if (b->device() == device) return b.get();
  return nullptr;
}

const Backend& Backends::resolve(Device requested) const {
  const Backend* cuda = find(Device::cuda);
  if (requested == Device::automatic)
    requested = cuda && cuda->device_count() > 0 ? Device::cuda : Device::cpu;
  const Backend* b = find(requested);
  if (!b)
    throw InputError("run.device = " + std::string(word_of(requested)) +
                     ", but this btm was built without it: rebuild with -DBTM_CUDA=ON, or use "
                     "run.device = cpu");
  if (b->device_count() == 0)
    throw InputError("run.device = " + std::string(word_of(requested)) +
                     ", but no device is visible to this process (check CUDA_VISIBLE_DEVICES and "
                     "the Slurm GPU binding), or use run.device = cpu");
  return *b;
}

}  // namespace btm

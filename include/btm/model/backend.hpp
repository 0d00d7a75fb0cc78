// backend.hpp: what a compute backend (src/cpu, src/cuda) gives the layers above the engine, so
// that none of them names one: the devices it sees, its engines, the communicator that sums
// gradients inside a group, and device facts for benchmarks. The app layer lists the backends
// of the build (app/backends.hpp) and passes them down; RunContext carries the one in use.
#pragma once

#include <cstddef>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "btm/config/config.hpp"
#include "btm/dist/comm.hpp"
#include "btm/model/engine.hpp"

namespace btm {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  // Devices this process sees (cpu: 1).
  virtual int device_count() const = 0;
  // A physical device's id, the same in every process of a node whatever renumbering the
  // environment applied (cuda: the PCI bus id), so ranks can tell they share one; cpu: "".
  virtual std::string device_id(int device) const = 0;
  virtual std::unique_ptr<Engine> make_engine(const ModelConfig& model,
                                              const EngineOptions& options) const = 0;
  // The communicator that sums an engine's gradients inside `group` when it is not `group`
  // itself (NCCL between GPUs of their own); nullptr: the MPI group on host memory.
  virtual std::unique_ptr<Communicator> gradient_comm(MpiComm& group, int device) const {
    (void)group;
    (void)device;
    return nullptr;
  }
  // InputError, with the figures and what to change, unless an engine of `model` training on
  // micro-batches of options.max_batch fits the memory this rank can have (`ranks_here` ranks
  // share the node's memory on cpu).
  virtual void check_fits(const ModelConfig& model, const EngineOptions& options,
                          int ranks_here) const = 0;
  // Bytes of memory in use for the engine: the device's on GPUs, the peak resident set on cpu.
  virtual std::size_t memory_used() const = 0;
  // Dense bf16 peak of the current device in TFLOP/s, for MFU (model_flops_utilization); 0 where
  // unknown (the CPU, GPUs btm has no figure for).
  virtual double peak_tflops() const { return 0; }
  // Mean milliseconds of one in-place sum of `count` int64 (a step's gradient sums) over
  // `comm`, on buffers of the memory `comm` works on, after `warmup` untimed calls.
  virtual double time_allreduce_ms(Communicator& comm, std::size_t count, int iterations,
                                   int warmup) const;
  // `btm bench --cases kernels`: times the backend's kernel cases whose name holds `filter`
  // (each over `iterations` runs after `warmup`) and writes one JSON line per case to `out`.
  // InputError where the backend has no kernel cases or none matches.
  virtual void bench_kernel_cases(const std::string& filter, int warmup, int iterations,
                                  std::ostream& out) const;
};

// The backends of a build; `resolve` picks the one a run asks for.
class Backends {
 public:
  explicit Backends(std::vector<std::unique_ptr<Backend>> list);
  // run.device: cpu, cuda, or auto (cuda where this build has it and a device is visible, else
  // cpu). InputError saying what to do when the build or the machine lacks it.
  const Backend& resolve(Device requested) const;
  // Whether this build has the backend.
  const Backend* find(Device device) const;

 private:
  std::vector<std::unique_ptr<Backend>> list_;
};

}  // namespace btm

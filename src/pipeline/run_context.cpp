#include "btm/pipeline/run_context.hpp"

#include <sched.h>

#include <algorithm>
#include <csignal>
#include <iostream>
#include <thread>

#include "btm/model/engine.hpp"
#include "btm/util/error.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {
constexpr int kPciIdLength = 16;  // "0000:19:00.0" padded
// Written by signal handlers, so it must be a plain global of this type.
volatile std::sig_atomic_t g_stop_requested = 0;
void on_stop_signal(int) {
  g_stop_requested = 1;
}
}  // namespace

void install_stop_handlers() {
  std::signal(SIGUSR1, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);
}
bool stop_requested() {
  return g_stop_requested != 0;
}
void request_stop() {
  g_stop_requested = 1;
}
void clear_stop() {
  g_stop_requested = 0;
}

NodeInfo node_info(const MpiComm& world) {
  const std::unique_ptr<MpiComm> local = world.split_shared();
  return NodeInfo{local->rank(), local->size()};
}

std::unique_ptr<Engine> make_engine_for(const RunContext& ctx) {
  EngineOptions options;
  options.threads = ctx.threads;
  options.gpu = ctx.gpu;
  options.max_batch = ctx.config.data.batch;
  return ctx.backend->make_engine(ctx.config.model, options);
}

Engine& training_engine(RunContext& ctx) {
  if (!ctx.engine) ctx.engine = make_engine_for(ctx);
  return *ctx.engine;
}

Communicator* gradient_comm(const RunContext& ctx, MpiComm& group,
                            std::unique_ptr<Communicator>& storage) {
  if (group.size() == 1) return nullptr;
  if (!ctx.gpus_shared) storage = ctx.backend->gradient_comm(group, ctx.gpu);
  return storage ? storage.get() : &group;
}

namespace {

// The GPU of this rank (gpu_of_local_rank). Two ranks on one physical GPU (same PCI bus id) are
// refused unless run.share_gpus: they share its memory and compute and are slower than one.
// Sets ctx.gpu and ctx.gpus_shared (the same on every rank).
void pick_gpu(RunContext& ctx) {
  MpiComm& world = ctx.world;
  const NodeInfo& node = ctx.node;
  const bool share = ctx.config.run.share_gpus;
  const int gpus = ctx.backend->device_count();
  const int gpu = gpu_of_local_rank(gpus, node.local_rank, node.local_size, share);
  std::string id = gpu >= 0 ? ctx.backend->device_id(gpu) : std::string();
  id.resize(kPciIdLength, ' ');
  std::string all(static_cast<std::size_t>(node.local_size) * kPciIdLength, ' ');
  world.split_shared()->allgather(id.data(), all.data(), kPciIdLength);
  bool shared = false;
  for (int r = 0; r < node.local_size && !shared; ++r)
    shared = r != node.local_rank &&
             all.compare(static_cast<std::size_t>(r) * kPciIdLength, kPciIdLength, id) == 0;
  // Both collectives on every rank before any throws: the decision is the same everywhere.
  const bool any_without = world.allreduce_max(gpu < 0 ? 1 : 0) != 0;
  const bool any_shared = world.allreduce_max(shared ? 1 : 0) != 0;
  if (any_without || (any_shared && !share))
    throw InputError("more ranks on a node than GPUs: " + std::to_string(node.local_size) +
                     " ranks on a node that has fewer GPUs for them (this rank sees " +
                     std::to_string(gpus) +
                     "); start one rank per GPU (srun --ntasks-per-node=GPUS --gpus-per-task=1, or "
                     "mpirun -np GPUS), or set run.share_gpus = true to test the layout on "
                     "fewer GPUs");
  ctx.gpu = gpu;
  ctx.gpus_shared = any_shared;
}

}  // namespace

int gpu_of_local_rank(int gpus, int local_rank, int local_size, bool share_gpus) {
  if (gpus <= 0) return -1;
  if (gpus >= local_size) return local_rank;
  if (gpus == 1) return 0;
  return share_gpus ? local_rank % gpus : -1;
}

RunContext::RunContext(const Config& c, MpiComm& w)
    : config(c), config_ini(to_ini(c)), world(w), node(node_info(w)), run_dir(c.run.dir) {}

RunContext make_context(const Config& config, MpiComm& world, const Backends& backends) {
  RunContext ctx(config, world);
  collective_check(world, [&] { ctx.backend = &backends.resolve(config.run.device); });
  // Every rank must compute on the same kind of device.
  const Device device = ctx.backend->device();
  const int on_gpu = world.allreduce_max(device == Device::cuda ? 1 : 0);
  const int on_cpu = world.allreduce_max(device == Device::cpu ? 1 : 0);
  if (on_gpu && on_cpu)
    throw InputError(
        "some ranks see a GPU and others do not: set run.device = cuda or cpu explicitly");
  if (device == Device::cuda) pick_gpu(ctx);
  if (config.run.threads > 0) {
    ctx.threads = config.run.threads;
  } else {
    // The cores this process may run on (Slurm's cgroup / binding), not the whole node's.
    cpu_set_t set;
    CPU_ZERO(&set);
    const int cores = sched_getaffinity(0, sizeof(set), &set) == 0
                          ? CPU_COUNT(&set)
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    ctx.threads = std::max(1, cores / ctx.node.local_size);
    // Open MPI binds each rank to one core when it starts one or two: the CPU work (merges,
    // checkpoint files, combination) then runs on one core of many, and so does the thread that
    // writes checkpoints in the background beside the one that drives the GPU.
    const int node_cores = static_cast<int>(std::thread::hardware_concurrency());
    if (world.rank() == 0 && cores == 1 && node_cores >= 2 * ctx.node.local_size)
      std::cerr << "[btm] warning: this rank may run on 1 of the node's " << node_cores
                << " cores (its CPU affinity), so its CPU work uses one thread: start it with "
                   "`mpirun --bind-to none` (Open MPI binds a rank to one core when it starts "
                   "one or two; srun binds as its --cpus-per-task says)"
                << std::endl;
  }
  return ctx;
}

fs::path domain_corpus(const RunContext& ctx, const std::string& domain) {
  const fs::path local = ctx.run_dir / "corpus" / (domain + ".h5");
  if (fs::exists(local)) return local;
  return fs::path(ctx.config.data.corpus) / (domain + ".h5");
}

}  // namespace btm

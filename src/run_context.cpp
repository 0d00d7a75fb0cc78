#include "btm/run_context.hpp"

#include <sched.h>

#include <algorithm>
#include <csignal>
#include <thread>

#include "btm/engine.hpp"
#include "btm/error.hpp"

namespace btm {

namespace fs = std::filesystem;

namespace {
// Written by signal handlers, so it must be a plain global of this type.
volatile std::sig_atomic_t g_stop_requested = 0;
void on_stop_signal(int) { g_stop_requested = 1; }
}  // namespace

void install_stop_handlers() {
  std::signal(SIGUSR1, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);
}
bool stop_requested() { return g_stop_requested != 0; }
void request_stop() { g_stop_requested = 1; }
void clear_stop() { g_stop_requested = 0; }

NodeInfo node_info(const MpiComm& world) {
  MPI_Comm local;
  BTM_MPI(MPI_Comm_split_type(world.raw(), MPI_COMM_TYPE_SHARED, world.rank(), MPI_INFO_NULL, &local));
  NodeInfo info;
  BTM_MPI(MPI_Comm_rank(local, &info.local_rank));
  BTM_MPI(MPI_Comm_size(local, &info.local_size));
  BTM_MPI(MPI_Comm_free(&local));
  return info;
}

void collective_check(MpiComm& comm, const std::function<void()>& check) {
  std::string message;
  try {
    check();
  } catch (const InputError& e) {
    message = e.what();
  }
  const int failing = message.empty() ? comm.size() : comm.rank();
  int first = failing;
  BTM_MPI(MPI_Allreduce(&failing, &first, 1, MPI_INT, MPI_MIN, comm.raw()));
  if (first == comm.size()) return;
  std::uint64_t length = message.size();
  comm.broadcast(&length, sizeof(length), first);
  message.resize(length);
  comm.broadcast(message.data(), length, first);
  throw InputError(message);
}

RunContext make_context(const Config& config, MpiComm& world) {
  RunContext ctx{config, to_ini(config), world, node_info(world), "cpu", 0, 1, fs::path(config.run.dir), 0};
  collective_check(world, [&] { ctx.device = resolve_device(config.run.device); });
  // Every rank must compute on the same kind of device.
  const int on_gpu = world.allreduce_max(ctx.device == "cuda" ? 1 : 0);
  const int on_cpu = world.allreduce_max(ctx.device == "cpu" ? 1 : 0);
  if (on_gpu && on_cpu)
    throw InputError("some ranks see a GPU and others do not: set run.device = cuda or cpu explicitly");
  if (ctx.device == "cuda") {
    const int gpus = cuda_device_count();
    const int too_many = world.allreduce_max(ctx.node.local_size > gpus ? 1 : 0);
    if (too_many)
      throw InputError("more ranks on a node than GPUs: a node runs " +
                       std::to_string(ctx.node.local_size) + " ranks but sees " + std::to_string(gpus) +
                       " GPUs; start one rank per GPU (srun --ntasks-per-node=GPUS --gpus-per-task=1, "
                       "or mpirun -np GPUS)");
    ctx.gpu = ctx.node.local_rank % gpus;
  }
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
  }
  return ctx;
}

fs::path domain_corpus(const RunContext& ctx, const std::string& domain) {
  const fs::path local = ctx.run_dir / "corpus" / (domain + ".h5");
  if (fs::exists(local)) return local;
  return fs::path(ctx.config.data.corpus) / (domain + ".h5");
}

}  // namespace btm

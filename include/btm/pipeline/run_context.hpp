// run_context.hpp: what every phase needs to know about the process it runs in: the config,
// the world communicator, this rank's place on its node, the device it computes on, and
// whether a stop was requested by a signal (Slurm's warning before the time limit).
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "btm/config/config.hpp"
#include "btm/dist/comm.hpp"
#include "btm/io/checkpoint_writer.hpp"
#include "btm/io/run_lock.hpp"
#include "btm/model/backend.hpp"

namespace btm {

struct NodeInfo {
  int local_rank = 0;
  int local_size = 1;
};

// The ranks sharing this node (MPI_Comm_split_type SHARED).
NodeInfo node_info(const MpiComm& world);

// SIGUSR1, SIGTERM and SIGINT set a flag that training loops poll at step boundaries; the group
// agrees on it with one small all-reduce, checkpoints and stops (exit code kExitPreempted).
void install_stop_handlers();
bool stop_requested();
void request_stop();
void clear_stop();

struct RunContext {
  RunContext(const Config& config, MpiComm& world);

  Config config;
  std::string config_ini;
  MpiComm& world;
  NodeInfo node;
  const Backend* backend = nullptr;  // the device this run computes on, the same on every rank
  int gpu = 0;                       // device index on this node (GPUs)
  int threads = 1;                   // CPU threads per rank
  std::filesystem::path run_dir;
  // Train each model at most this many steps in this invocation, then checkpoint and stop as
  // on a signal (0: no limit). For time-boxed jobs; also makes preemption testable.
  std::int64_t max_steps_per_run = 0;
  // Some node runs ranks on one GPU (run.share_gpus): gradients go through MPI, not NCCL.
  bool gpus_shared = false;
  // The phases the command runs after the current one, for the ETA of the progress lines
  // (pipeline/progress.hpp): btm run sets them, single-phase commands leave them off.
  struct Ahead {
    bool elms = false, dense = false, eval = false;
  } ahead;
  // Rank 0's lock on the run directory (io/run_lock.hpp) while a command writes it.
  std::shared_ptr<RunLock> lock;
  // The engine the training phases share (training_engine), and the checkpoint whose state it
  // keeps a copy of (Engine::keep_state; empty: none): a branch referring to that state starts
  // from the copy instead of reading the file. The same on every rank.
  std::unique_ptr<Engine> engine;
  std::filesystem::path kept_state_of;
  std::int64_t kept_state_step = 0;
  // btm run sets it: the seed phase keeps the seed's final state for the ELMs and dense model.
  bool keep_seed_state = false;
  // The checkpoint the engine's working state already is (empty: none), with its attributes: a
  // new seed, given to the engine from memory while its file is written in the background, so
  // that train_model neither waits for the file nor reads it back. The same on every rank.
  std::filesystem::path engine_state_of;
  CheckpointInfo engine_state_info;
  // Writes the checkpoints of the models this rank leads while training goes on; a phase waits
  // for it before anything reads them (train_model does at a stop).
  std::unique_ptr<CheckpointWriter> writer = std::make_unique<CheckpointWriter>();
  // btm run sets it when evaluation follows: a group leader keeps the final parameters of the
  // models it trains in `trained_params` (while they take at most a quarter of the memory left),
  // and the evaluation scores them from there instead of reading their checkpoints back.
  bool keep_trained_params = false;
  std::map<std::filesystem::path, std::vector<float>> trained_params;
  // Seconds this rank spent in training steps (forward, backward, optimizer), over its models.
  double training_s = 0;

  bool leader() const { return world.rank() == 0; }
};

// Resolves the device among `backends` (refusing more ranks on a node than it has GPUs), the
// thread count and the run directory; identical decisions on every rank. `backends` must
// outlive the context.
RunContext make_context(const Config& config, MpiComm& world, const Backends& backends);

// The visible CUDA device node-local rank `local_rank` of `local_size` computes on, or -1 for
// none: device local_rank when the rank sees a GPU per local rank (mpirun), its only visible
// device when it sees one (Slurm binding a GPU per task), else with share_gpus device
// local_rank mod gpus. make_context then refuses two ranks on one physical GPU unless
// share_gpus.
int gpu_of_local_rank(int gpus, int local_rank, int local_size, bool share_gpus);

// Path of a domain's corpus: RUN/corpus/DOMAIN.h5 (pseudo-domains of the random split) if it
// exists, else data.corpus/DOMAIN.h5.
std::filesystem::path domain_corpus(const RunContext& ctx, const std::string& domain);

// The engine this rank computes with: ctx.backend's, on its threads or GPU, with buffers for
// batches of data.batch sequences.
std::unique_ptr<Engine> make_engine_for(const RunContext& ctx);
// ctx.engine, made on first use: one engine for every model the training phases train.
Engine& training_engine(RunContext& ctx);
// The communicator that sums gradients inside `group`: nullptr for a group of one rank, the
// backend's own (NCCL on GPUs of their own, kept alive by `storage`), else `group` itself (MPI
// through host memory; also where ranks share GPUs, since NCCL refuses two ranks on one GPU).
Communicator* gradient_comm(const RunContext& ctx, MpiComm& group,
                            std::unique_ptr<Communicator>& storage);

}  // namespace btm

// checkpoint_writer.hpp: checkpoints written while training goes on. The trainer copies the
// engine's state into host memory and hands it over; a thread of the writer's own writes it
// (each file still atomic: h5::AtomicFile), one at a time. Where the HDF5 library is not
// thread-safe the write happens in write() itself.
#pragma once

#include <exception>
#include <filesystem>
#include <thread>

#include "btm/io/checkpoint.hpp"

namespace btm {

class CheckpointWriter {
 public:
  CheckpointWriter();
  ~CheckpointWriter();  // waits for the write in flight (its error is lost: call wait())
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  // Whether writes go on a thread (HDF5 is thread-safe).
  bool asynchronous() const { return async_; }
  // A checkpoint to fill: the one the last finished write held, where there is one (its vectors
  // already have their size: no new host memory per checkpoint).
  Checkpoint buffer();
  // Waits for the write in flight (rethrowing its error), then writes `c` to `file`. With
  // `keep_params`, the write then moves c.params there (read it only after wait()) and gives
  // the buffer new parameters, touched on the writer's thread: the caller keeps the model's
  // parameters without a copy on its own time.
  void write(std::filesystem::path file, Checkpoint c, std::vector<float>* keep_params = nullptr);
  // Waits for the write in flight; rethrows its error. A checkpoint is on disk only after this.
  void wait();

 private:
  bool async_ = false;
  std::thread thread_;
  std::exception_ptr error_;
  Checkpoint done_;
};

}  // namespace btm

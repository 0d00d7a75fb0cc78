#include "btm/io/checkpoint_writer.hpp"

#include <hdf5.h>

#include <utility>

#include "btm/io/h5.hpp"

namespace btm {

CheckpointWriter::CheckpointWriter() {
  hbool_t safe = 0;
  async_ = H5is_library_threadsafe(&safe) >= 0 && safe;
}

CheckpointWriter::~CheckpointWriter() {
  if (thread_.joinable()) thread_.join();
}

Checkpoint CheckpointWriter::buffer() {
  wait();
  return std::exchange(done_, Checkpoint());
}

namespace {

void hand_over_params(Checkpoint& c, std::vector<float>* keep_params) {
  if (!keep_params) return;
  const std::size_t n = c.params.size();
  *keep_params = std::move(c.params);
  c.params.assign(n, 0.0f);
}

}  // namespace

void CheckpointWriter::write(std::filesystem::path file, Checkpoint c,
                             std::vector<float>* keep_params) {
  wait();
  if (!async_) {
    save_checkpoint(file, c);
    hand_over_params(c, keep_params);
    done_ = std::move(c);
    return;
  }
  thread_ = std::thread([this, file = std::move(file), c = std::move(c), keep_params]() mutable {
    try {
      h5::quiet_errors();  // HDF5's error settings are per thread
      h5::yield_to_other_threads(true);
      save_checkpoint(file, c);
      hand_over_params(c, keep_params);
    } catch (...) {
      error_ = std::current_exception();
    }
    done_ = std::move(c);
  });
}

void CheckpointWriter::wait() {
  if (thread_.joinable()) thread_.join();
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

}  // namespace btm

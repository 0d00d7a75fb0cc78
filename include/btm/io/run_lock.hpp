// run_lock.hpp: one writer per run directory. An advisory POSIX record lock (fcntl) on RUN/.lock,
// taken by rank 0 of a command that writes the run and released when the process ends (also on
// kill -9 or a crash, and across NFS through the lock daemon). The file names the holder (host,
// pid, command, start time) for the message a second writer gets. The holder removes the
// temporary files (NAME.h5.tmp.PID) that a killed writer left behind: with the lock held, no
// one else can be writing them.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace btm {

class RunLock {
 public:
  // Creates RUN (and RUN/.lock) if needed. InputError naming the holder when another process
  // holds the lock, or saying why the directory cannot be written.
  RunLock(const std::filesystem::path& run_dir, const std::string& command);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  // The stale temporary files removed when the lock was taken.
  const std::vector<std::filesystem::path>& removed() const { return removed_; }

 private:
  int fd_ = -1;
  std::vector<std::filesystem::path> removed_;
};

}  // namespace btm

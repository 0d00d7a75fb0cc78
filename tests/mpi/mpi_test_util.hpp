// Helpers of the MPI test files (run under mpiexec with 4 ranks).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "btm/dist/comm.hpp"
#include "test_util.hpp"

namespace btm::test {

// MPI_COMM_WORLD (MPI is initialised and finalised by tests/test_main.cpp).
inline MpiComm& world() {
  static MpiComm comm(MPI_COMM_WORLD, false);
  return comm;
}

// A temporary directory made by rank 0 of `comm`, known to all its ranks; removed after every
// rank is done with it.
class SharedDir {
 public:
  explicit SharedDir(MpiComm& comm, const std::string& prefix = "btm-mpi") : comm_(comm) {
    std::string path;
    if (comm.rank() == 0) {
      owned_ = std::make_unique<TempDir>(prefix);
      path = owned_->path().string();
    }
    std::uint64_t n = path.size();
    comm.broadcast(&n, sizeof(n), 0);
    path.resize(n);
    comm.broadcast(path.data(), n, 0);
    path_ = path;
  }
  ~SharedDir() { comm_.barrier(); }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
  const std::filesystem::path& path() const { return path_; }

 private:
  MpiComm& comm_;
  std::unique_ptr<TempDir> owned_;
  std::filesystem::path path_;
};

}  // namespace btm::test

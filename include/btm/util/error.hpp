// error.hpp: the project's error types, exit codes and the checks wrapped around every
// MPI and HDF5 call (CUDA, cuBLAS and NCCL checks live in cuda/check.hpp).
#pragma once

#include <source_location>
#include <stdexcept>
#include <string>
#include <string_view>

namespace btm {

// Process exit codes. Slurm scripts depend on these numbers.
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,     // a fault of the program or the system (I/O, MPI, CUDA)
  kExitBadInput = 2,    // options, configs, rank layouts, data, checkpoints
  kExitPreempted = 75,  // stopped on a signal after checkpointing: rerun to continue (EX_TEMPFAIL)
};

// A problem with what the user gave us. The message names the thing and what to do.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A failure of the system or of a library call; carries the file and line of the call.
class SystemError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void throw_system_error(std::string_view what,
                                     std::source_location where = std::source_location::current());

// Checks an MPI return code.
void check_mpi(int code, const char* call,
               std::source_location where = std::source_location::current());
// Checks an HDF5 return value (herr_t or hid_t): negative means failure.
long long check_h5(long long value, const char* call,
                   std::source_location where = std::source_location::current());

}  // namespace btm

#define BTM_MPI(call) ::btm::check_mpi((call), #call)
#define BTM_H5(call) ::btm::check_h5((call), #call)

#include "btm/util/error.hpp"

#include <mpi.h>

#include <filesystem>

namespace btm {

namespace {
std::string location(const std::source_location& where) {
  return std::filesystem::path(where.file_name()).filename().string() + ":" +
         std::to_string(where.line());
}
}  // namespace

void throw_system_error(std::string_view what, std::source_location where) {
  throw SystemError(std::string(what) + " (" + location(where) + ")");
}

void check_mpi(int code, const char* call, std::source_location where) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw_system_error(std::string("MPI call failed: ") + call + ": " + text, where);
}

long long check_h5(long long value, const char* call, std::source_location where) {
  if (value < 0) throw_system_error(std::string("HDF5 call failed: ") + call, where);
  return value;
}

}  // namespace btm

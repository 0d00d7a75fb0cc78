// check.hpp: checks wrapped around every CUDA runtime, cuBLAS/cuBLASLt and NCCL call.
// A failing call throws btm::SystemError naming the call, the library's error text and the
// file:line of the call. Only in builds with BTM_HAVE_CUDA.
#pragma once

#include <source_location>

namespace btm {

// The codes are the libraries' enums (cudaError_t, cublasStatus_t, ncclResult_t) as int, so
// this header needs none of the CUDA headers.
void check_cuda(int code, const char* call,
                std::source_location where = std::source_location::current());
void check_cublas(int code, const char* call,
                  std::source_location where = std::source_location::current());
void check_nccl(int code, const char* call,
                std::source_location where = std::source_location::current());

}  // namespace btm

#define BTM_CUDA_CHECK(call) ::btm::check_cuda(static_cast<int>(call), #call)
#define BTM_CUBLAS_CHECK(call) ::btm::check_cublas(static_cast<int>(call), #call)
#define BTM_NCCL_CHECK(call) ::btm::check_nccl(static_cast<int>(call), #call)
// After a kernel launch: the launch configuration error, if any (no device synchronisation).
#define BTM_CUDA_CHECK_LAUNCH() \
  ::btm::check_cuda(static_cast<int>(cudaGetLastError()), "kernel launch")

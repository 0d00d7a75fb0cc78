// The CUDA, cuBLAS and NCCL error checks (cuda/check.hpp).
#include "btm/cuda/check.hpp"

#include <cublas_api.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <string>

#include "btm/util/error.hpp"

namespace btm {

void check_cuda(int code, const char* call, std::source_location where) {
  if (code == cudaSuccess) return;
  const auto error = static_cast<cudaError_t>(code);
  throw_system_error(std::string("CUDA call failed: ") + call + ": " + cudaGetErrorName(error) +
                         " (" + cudaGetErrorString(error) + ")",
                     where);
}

void check_cublas(int code, const char* call, std::source_location where) {
  if (code == CUBLAS_STATUS_SUCCESS) return;
  const auto status = static_cast<cublasStatus_t>(code);
  throw_system_error(std::string("cuBLAS call failed: ") + call + ": " +
                         cublasGetStatusName(status) + " (" + cublasGetStatusString(status) + ")",
                     where);
}

void check_nccl(int code, const char* call, std::source_location where) {
  if (code == ncclSuccess) return;
  const auto result = static_cast<ncclResult_t>(code);
  throw_system_error(std::string("NCCL call failed: ") + call + ": " + ncclGetErrorString(result),
                     where);
}

}  // namespace btm

// nccl_comm.cpp: the NCCL communicator of one group (make_nccl_comm in cuda/nccl_comm.hpp). The
// unique id is made on the group's rank 0 and broadcast with MPI inside the group; the device
// is selected before ncclCommInitRank. Collectives run on the caller's stream, or on the
// communicator's own stream followed by a synchronisation when the caller passes none.
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <cstdlib>
#include <string>

#include "btm/cuda/check.hpp"
#include "btm/cuda/nccl_comm.hpp"
#include "btm/util/error.hpp"

namespace btm {
namespace {

class NcclComm final : public Communicator {
 public:
  NcclComm(MpiComm& group, int gpu) : rank_(group.rank()), size_(group.size()), gpu_(gpu) {
    // NVLink multicast (NVLS) can take the shared machines' GPUs out of service: keep it off
    // unless the environment already decided.
    setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);
    ncclUniqueId id{};
    if (rank_ == 0) BTM_NCCL_CHECK(ncclGetUniqueId(&id));
    BTM_MPI(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, group.raw()));
    BTM_CUDA_CHECK(cudaSetDevice(gpu_));
    BTM_NCCL_CHECK(ncclCommInitRank(&comm_, size_, id, rank_));
    BTM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }

  ~NcclComm() override {
    cudaSetDevice(gpu_);
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
    ncclCommDestroy(comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MemorySpace space() const override { return MemorySpace::Device; }

  void allreduce_sum(float* data, std::size_t count, void* stream) override {
    cudaStream_t s = pick(stream);
    BTM_NCCL_CHECK(ncclAllReduce(data, data, count, ncclFloat, ncclSum, comm_, s));
    count_bytes(count * sizeof(float));
    if (stream == nullptr) BTM_CUDA_CHECK(cudaStreamSynchronize(s));
  }

  void allreduce_sum(std::int64_t* data, std::size_t count, void* stream) override {
    cudaStream_t s = pick(stream);
    BTM_NCCL_CHECK(ncclAllReduce(data, data, count, ncclInt64, ncclSum, comm_, s));
    count_bytes(count * sizeof(std::int64_t));
    if (stream == nullptr) BTM_CUDA_CHECK(cudaStreamSynchronize(s));
  }

  void broadcast(void* data, std::size_t bytes, int root, void* stream) override {
    cudaStream_t s = pick(stream);
    BTM_NCCL_CHECK(ncclBroadcast(data, data, bytes, ncclChar, root, comm_, s));
    if (rank_ == root) count_bytes(bytes);
    if (stream == nullptr) BTM_CUDA_CHECK(cudaStreamSynchronize(s));
  }

  void synchronize(void* stream) override { BTM_CUDA_CHECK(cudaStreamSynchronize(pick(stream))); }

 private:
  cudaStream_t pick(void* stream) const {
    return stream != nullptr ? static_cast<cudaStream_t>(stream) : stream_;
  }

  int rank_, size_, gpu_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_comm(MpiComm& group, int gpu) {
  return std::make_unique<NcclComm>(group, gpu);
}

}  // namespace btm

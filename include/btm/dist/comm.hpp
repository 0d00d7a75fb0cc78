// comm.hpp: collectives inside one group of ranks. The MPI implementation works on host
// buffers; the NCCL implementation (cuda/nccl_comm.hpp) works on device buffers and plugs into the
// same interface. Every communicator counts the bytes it sends, so a test can prove that no
// byte crosses ELM groups during training.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace btm {

enum class MemorySpace { Host, Device };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Where the buffers passed to allreduce_sum / broadcast must live.
  virtual MemorySpace space() const = 0;

  // In-place sum over the group. `stream` is a cudaStream_t for device communicators (nullptr:
  // the communicator's own stream, synchronised before returning); host communicators ignore it.
  virtual void allreduce_sum(float* data, std::size_t count, void* stream = nullptr) = 0;
  // The same on 64-bit integers: exact, so the result does not depend on the reduction order.
  virtual void allreduce_sum(std::int64_t* data, std::size_t count, void* stream = nullptr) = 0;
  virtual void broadcast(void* data, std::size_t bytes, int root, void* stream = nullptr) = 0;
  // Waits until every collective issued on `stream` has finished (no-op on host).
  virtual void synchronize(void* stream = nullptr) { (void)stream; }

  // Bytes this rank has handed to collectives so far (payload, not wire bytes).
  std::uint64_t bytes_sent() const { return bytes_sent_; }

 protected:
  void count_bytes(std::uint64_t bytes) { bytes_sent_ += bytes; }

 private:
  std::uint64_t bytes_sent_ = 0;
};

// An MPI communicator on host memory. Also carries the small host-side control collectives
// (scalars, gathers) that every phase needs. Owns the MPI_Comm only when told to.
class MpiComm final : public Communicator {
 public:
  MpiComm(MPI_Comm comm, bool owned);
  ~MpiComm() override;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MemorySpace space() const override { return MemorySpace::Host; }
  MPI_Comm raw() const { return comm_; }

  void allreduce_sum(float* data, std::size_t count, void* stream = nullptr) override;
  void allreduce_sum(std::int64_t* data, std::size_t count, void* stream = nullptr) override;
  void broadcast(void* data, std::size_t bytes, int root, void* stream = nullptr) override;

  void allreduce_sum(double* data, std::size_t count);
  double allreduce_sum(double value);
  int allreduce_max(int value);
  int allreduce_min(int value);
  std::int64_t allreduce_max(std::int64_t value);
  // The sum over the ranks into `data` of rank `root` (other ranks' data is unchanged).
  void reduce_sum(float* data, std::size_t count, int root);
  // The sum over the ranks into `data` of rank `root` (exact); other ranks' data is unchanged.
  void reduce_sum(std::int64_t* data, std::size_t count, int root);
  // Every rank's `bytes_per_rank` bytes, in rank order.
  void allgather(const void* send, void* recv, std::size_t bytes_per_rank);
  // Every rank's buffer (of any size) on rank 0, in rank order; empty elsewhere.
  std::vector<std::vector<char>> gather_to_root(const std::vector<char>& mine);
  // `v` of rank `root` on every rank (its size too); T trivially copyable.
  template <typename T>
  void broadcast_vector(std::vector<T>& v, int root) {
    static_assert(std::is_trivially_copyable_v<T>);
    std::uint64_t n = v.size();
    broadcast(&n, sizeof(n), root);
    v.resize(n);
    if (n) broadcast(v.data(), n * sizeof(T), root);
  }
  void broadcast_string(std::string& s, int root);
  void barrier();

  // Splits this communicator (MPI_Comm_split); the result owns its MPI_Comm.
  std::unique_ptr<MpiComm> split(int color, int key) const;
  // The ranks that share this node (MPI_Comm_split_type SHARED), ordered as here.
  std::unique_ptr<MpiComm> split_shared() const;

 private:
  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0, size_ = 1;
};

// Collective error agreement, so no rank is left waiting in a collective the others never
// reach: runs `check` on every rank; if it throws on any rank, every rank throws the error of
// the lowest failing rank: an InputError as InputError, any other std::exception as
// SystemError.
void collective_check(MpiComm& comm, const std::function<void()>& check);
// Evaluates `decide` on rank 0 only and gives its answer to every rank. Decisions that gate
// collectives (is this model finished? does that file exist?) must not depend on each rank's
// own view of a shared filesystem, which differs while rank 0 is writing and across NFS clients.
bool decided_by_root(MpiComm& comm, const std::function<bool()>& decide);
// The same for a list of names.
std::vector<std::string> listed_by_root(MpiComm& comm,
                                        const std::function<std::vector<std::string>()>& list);

}  // namespace btm

#include "btm/dist/comm.hpp"

#include <limits>

#include "btm/util/error.hpp"

namespace btm {

MpiComm::MpiComm(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
  BTM_MPI(MPI_Comm_rank(comm_, &rank_));
  BTM_MPI(MPI_Comm_size(comm_, &size_));
}

MpiComm::~MpiComm() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owned_ && !finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

namespace {
// MPI counts are int: reduce in chunks for very large models.
template <typename T>
void allreduce_in_chunks(T* data, std::size_t count, MPI_Datatype type, MPI_Comm comm) {
  const std::size_t chunk = static_cast<std::size_t>(std::numeric_limits<int>::max() / 2);
  for (std::size_t off = 0; off < count; off += chunk) {
    const int n = static_cast<int>(std::min(chunk, count - off));
    BTM_MPI(MPI_Allreduce(MPI_IN_PLACE, data + off, n, type, MPI_SUM, comm));
  }
}
}  // namespace

void MpiComm::allreduce_sum(float* data, std::size_t count, void*) {
  allreduce_in_chunks(data, count, MPI_FLOAT, comm_);
  count_bytes(count * sizeof(float));
}

void MpiComm::allreduce_sum(std::int64_t* data, std::size_t count, void*) {
  allreduce_in_chunks(data, count, MPI_INT64_T, comm_);
  count_bytes(count * sizeof(std::int64_t));
}

void MpiComm::allreduce_sum(double* data, std::size_t count) {
  BTM_MPI(MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(count), MPI_DOUBLE, MPI_SUM, comm_));
  count_bytes(count * sizeof(double));
}

double MpiComm::allreduce_sum(double value) {
  allreduce_sum(&value, 1);
  return value;
}

int MpiComm::allreduce_max(int value) {
  BTM_MPI(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_INT, MPI_MAX, comm_));
  count_bytes(sizeof(int));
  return value;
}

int MpiComm::allreduce_min(int value) {
  BTM_MPI(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_INT, MPI_MIN, comm_));
  count_bytes(sizeof(int));
  return value;
}

void MpiComm::reduce_sum(float* data, std::size_t count, int root) {
  const std::size_t chunk = static_cast<std::size_t>(std::numeric_limits<int>::max() / 2);
  for (std::size_t off = 0; off < count; off += chunk) {
    const int n = static_cast<int>(std::min(chunk, count - off));
    if (rank_ == root)
      BTM_MPI(MPI_Reduce(MPI_IN_PLACE, data + off, n, MPI_FLOAT, MPI_SUM, root, comm_));
    else
      BTM_MPI(MPI_Reduce(data + off, nullptr, n, MPI_FLOAT, MPI_SUM, root, comm_));
  }
  count_bytes(count * sizeof(float));
}

std::int64_t MpiComm::allreduce_max(std::int64_t value) {
  BTM_MPI(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_INT64_T, MPI_MAX, comm_));
  count_bytes(sizeof(value));
  return value;
}

void MpiComm::reduce_sum(std::int64_t* data, std::size_t count, int root) {
  const std::size_t chunk = static_cast<std::size_t>(std::numeric_limits<int>::max() / 2);
  for (std::size_t off = 0; off < count; off += chunk) {
    const int n = static_cast<int>(std::min(chunk, count - off));
    if (rank_ == root)
      BTM_MPI(MPI_Reduce(MPI_IN_PLACE, data + off, n, MPI_INT64_T, MPI_SUM, root, comm_));
    else
      BTM_MPI(MPI_Reduce(data + off, nullptr, n, MPI_INT64_T, MPI_SUM, root, comm_));
  }
  count_bytes(count * sizeof(std::int64_t));
}

void MpiComm::broadcast(void* data, std::size_t bytes, int root, void*) {
  const std::size_t chunk = static_cast<std::size_t>(std::numeric_limits<int>::max() / 2);
  char* p = static_cast<char*>(data);
  for (std::size_t off = 0; off < bytes; off += chunk) {
    const int n = static_cast<int>(std::min(chunk, bytes - off));
    BTM_MPI(MPI_Bcast(p + off, n, MPI_BYTE, root, comm_));
  }
  if (rank_ == root) count_bytes(bytes);
}

void MpiComm::allgather(const void* send, void* recv, std::size_t bytes_per_rank) {
  BTM_MPI(MPI_Allgather(send, static_cast<int>(bytes_per_rank), MPI_BYTE, recv,
                        static_cast<int>(bytes_per_rank), MPI_BYTE, comm_));
  count_bytes(bytes_per_rank);
}

std::vector<std::vector<char>> MpiComm::gather_to_root(const std::vector<char>& mine) {
  const std::uint64_t my_size = mine.size();
  std::vector<std::uint64_t> sizes(static_cast<std::size_t>(size_));
  allgather(&my_size, sizes.data(), sizeof(my_size));
  // Point to point in chunks: MPI counts are int.
  constexpr std::size_t kChunk = std::size_t{1} << 30;
  constexpr int kTag = 7301;
  std::vector<std::vector<char>> all;
  if (rank_ == 0) {
    all.resize(sizes.size());
    all[0] = mine;
    for (std::size_t r = 1; r < sizes.size(); ++r) {
      all[r].resize(sizes[r]);
      for (std::size_t off = 0; off < sizes[r]; off += kChunk) {
        const int n = static_cast<int>(std::min(kChunk, sizes[r] - off));
        BTM_MPI(MPI_Recv(all[r].data() + off, n, MPI_BYTE, static_cast<int>(r), kTag, comm_,
                         MPI_STATUS_IGNORE));
      }
    }
  } else {
    for (std::size_t off = 0; off < mine.size(); off += kChunk) {
      const int n = static_cast<int>(std::min(kChunk, mine.size() - off));
      BTM_MPI(MPI_Send(mine.data() + off, n, MPI_BYTE, 0, kTag, comm_));
    }
    count_bytes(mine.size());
  }
  return all;
}

void MpiComm::broadcast_string(std::string& s, int root) {
  std::uint64_t n = s.size();
  broadcast(&n, sizeof(n), root);
  s.resize(n);
  if (n) broadcast(s.data(), n, root);
}

void MpiComm::barrier() {
  BTM_MPI(MPI_Barrier(comm_));
}

std::unique_ptr<MpiComm> MpiComm::split(int color, int key) const {
  MPI_Comm out = MPI_COMM_NULL;
  BTM_MPI(MPI_Comm_split(comm_, color, key, &out));
  return std::make_unique<MpiComm>(out, true);
}

std::unique_ptr<MpiComm> MpiComm::split_shared() const {
  MPI_Comm out = MPI_COMM_NULL;
  BTM_MPI(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &out));
  return std::make_unique<MpiComm>(out, true);
}

void collective_check(MpiComm& comm, const std::function<void()>& check) {
  enum Kind : int { none = 0, input = 1, system = 2 };
  Kind kind = none;
  std::string message;
  try {
    check();
  } catch (const InputError& e) {
    kind = input;
    message = e.what();
  } catch (const std::exception& e) {
    // SystemError, and anything else (std::bad_alloc, a std::filesystem_error): a failure of
    // this rank that the others must not wait for.
    kind = system;
    message = e.what();
  }
  const int first = comm.allreduce_min(kind == none ? comm.size() : comm.rank());
  if (first == comm.size()) return;
  comm.broadcast_string(message, first);
  int first_kind = kind;
  comm.broadcast(&first_kind, sizeof(first_kind), first);
  if (first_kind == input) throw InputError(message);
  throw SystemError(message);
}

bool decided_by_root(MpiComm& comm, const std::function<bool()>& decide) {
  int answer = 0;
  collective_check(comm, [&] {
    if (comm.rank() == 0) answer = decide() ? 1 : 0;
  });
  comm.broadcast(&answer, sizeof(answer), 0);
  return answer != 0;
}

std::vector<std::string> listed_by_root(MpiComm& comm,
                                        const std::function<std::vector<std::string>()>& list) {
  std::string joined;
  collective_check(comm, [&] {
    if (comm.rank() != 0) return;
    for (const std::string& item : list()) joined += item + '\n';
  });
  comm.broadcast_string(joined, 0);
  std::vector<std::string> items;
  std::size_t start = 0;
  for (std::size_t end; (end = joined.find('\n', start)) != std::string::npos; start = end + 1)
    items.push_back(joined.substr(start, end - start));
  return items;
}

}  // namespace btm

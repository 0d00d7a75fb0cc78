// The NCCL communicator and the CUDA engine's gradient reduction (exact int64 sums of a step's
// micro-batch gradients). Meaningful under `mpirun -np 2 btm_gpu_tests --gtest_filter='Nccl*'`
// on a machine with 2 GPUs (rank r uses GPU r % count); as a single process every test but the
// group-only one runs on a group of one.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "btm/cuda/engine.hpp"
#include "btm/cuda/nccl_comm.hpp"
#include "btm/dist/comm.hpp"
#include "btm/model/engine.hpp"
#include "btm/model/params.hpp"
#include "gpu_test_util.hpp"

namespace btm {
namespace {

using namespace gputest;

int my_gpu(const MpiComm& world) {
  return world.rank() % cuda_visible_devices();
}

// NCCL cannot put two ranks of one communicator on one GPU.
#define BTM_SKIP_WITHOUT_A_GPU_PER_RANK()                                     \
  do {                                                                        \
    MpiComm world_(MPI_COMM_WORLD, false);                                    \
    if (world_.size() > cuda_visible_devices())                               \
      GTEST_SKIP() << world_.size() << " ranks on " << cuda_visible_devices() \
                   << " GPUs: NCCL needs a GPU per rank";                     \
  } while (0)

TEST(NcclComm, AllReduceSumsOnOwnAndGivenStreamAndCountsBytes) {
  BTM_SKIP_WITHOUT_GPU();
  MpiComm world(MPI_COMM_WORLD, false);
  BTM_CUDA_CHECK(cudaSetDevice(my_gpu(world)));
  auto nccl = make_nccl_comm(world, my_gpu(world));
  EXPECT_EQ(nccl->rank(), world.rank());
  EXPECT_EQ(nccl->size(), world.size());
  EXPECT_EQ(nccl->space(), MemorySpace::Device);
  const char* nvls = std::getenv("NCCL_NVLS_ENABLE");
  ASSERT_NE(nvls, nullptr);
  EXPECT_STREQ(nvls, "0");

  const std::size_t n = 1000003;  // odd, several MB
  std::vector<float> mine(n);
  for (std::size_t i = 0; i < n; ++i) mine[i] = static_cast<float>((world.rank() + 1) * (i % 97));
  auto data = to_device(mine);
  nccl->allreduce_sum(data.get(), n, nullptr);
  const int R = world.size();
  const float ranks_sum = static_cast<float>(R * (R + 1) / 2);
  auto got = from_device(data, n);
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], ranks_sum * (i % 97)) << i;
  EXPECT_EQ(nccl->bytes_sent(), n * sizeof(float));

  cudaStream_t stream = nullptr;
  BTM_CUDA_CHECK(cudaStreamCreate(&stream));
  auto again = to_device(mine);
  nccl->allreduce_sum(again.get(), n, stream);
  nccl->synchronize(stream);
  got = from_device(again, n);
  for (std::size_t i = 0; i < n; i += 1009) ASSERT_EQ(got[i], ranks_sum * (i % 97)) << i;
  EXPECT_EQ(nccl->bytes_sent(), 2 * n * sizeof(float));
  BTM_CUDA_CHECK(cudaStreamDestroy(stream));
}

// The int64 all-reduce (a step's exact gradient sums) is exact: large values of both signs
// sum without any rounding, on the communicator's stream and a given one.
TEST(NcclComm, AllReduceSumsInt64Exactly) {
  BTM_SKIP_WITHOUT_GPU();
  BTM_SKIP_WITHOUT_A_GPU_PER_RANK();
  MpiComm world(MPI_COMM_WORLD, false);
  BTM_CUDA_CHECK(cudaSetDevice(my_gpu(world)));
  auto nccl = make_nccl_comm(world, my_gpu(world));
  const std::size_t n = 300007;
  const std::int64_t big = std::int64_t{1} << 55;  // far beyond a double's 53 bits
  auto value = [&](int r, std::size_t i) {
    return (i % 2 ? -big : big) + static_cast<std::int64_t>(i) * (r + 1) + r;
  };
  std::vector<std::int64_t> mine(n);
  for (std::size_t i = 0; i < n; ++i) mine[i] = value(world.rank(), i);
  const int R = world.size();
  auto expected = [&](std::size_t i) {
    std::int64_t sum = 0;
    for (int r = 0; r < R; ++r) sum += value(r, i);
    return sum;
  };
  auto data = to_device(mine);
  nccl->allreduce_sum(data.get(), n, nullptr);
  auto got = from_device(data, n);
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], expected(i)) << i;
  EXPECT_EQ(nccl->bytes_sent(), n * sizeof(std::int64_t));
  cudaStream_t stream = nullptr;
  BTM_CUDA_CHECK(cudaStreamCreate(&stream));
  auto again = to_device(mine);
  nccl->allreduce_sum(again.get(), n, stream);
  nccl->synchronize(stream);
  got = from_device(again, n);
  for (std::size_t i = 0; i < n; i += 101) ASSERT_EQ(got[i], expected(i)) << i;
  BTM_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST(NcclComm, BroadcastCopiesTheRootsBytes) {
  BTM_SKIP_WITHOUT_GPU();
  MpiComm world(MPI_COMM_WORLD, false);
  BTM_CUDA_CHECK(cudaSetDevice(my_gpu(world)));
  auto nccl = make_nccl_comm(world, my_gpu(world));
  const int root = world.size() - 1;
  std::vector<std::int32_t> mine(4096, world.rank() == root ? 77 : -1);
  auto data = to_device(mine);
  nccl->broadcast(data.get(), mine.size() * sizeof(std::int32_t), root, nullptr);
  for (std::int32_t x : from_device(data, mine.size())) ASSERT_EQ(x, 77);
  EXPECT_EQ(nccl->bytes_sent(), world.rank() == root ? mine.size() * 4 : 0u);
}

TEST(NcclComm, SplitGroupsReduceOnlyInsideTheGroup) {
  BTM_SKIP_WITHOUT_GPU();
  MpiComm world(MPI_COMM_WORLD, false);
  BTM_CUDA_CHECK(cudaSetDevice(my_gpu(world)));
  // Groups of one rank each: an all-reduce must leave every rank's own values.
  auto group = world.split(world.rank(), 0);
  auto nccl = make_nccl_comm(*group, my_gpu(world));
  EXPECT_EQ(nccl->size(), 1);
  std::vector<float> mine(1024, static_cast<float>(world.rank() + 5));
  auto data = to_device(mine);
  nccl->allreduce_sum(data.get(), mine.size(), nullptr);
  for (float x : from_device(data, mine.size())) ASSERT_EQ(x, static_cast<float>(world.rank() + 5));
}

ModelConfig small_model() {
  ModelConfig m;
  m.n_layer = 3;
  m.n_head = 2;
  m.d_model = 64;
  m.context = 32;
  m.vocab_size = 90;
  return m;
}

// A step of M = A * R micro-batches spread over the R ranks of the group (A per rank, the group
// communicator on each rank's last micro-step) has bitwise the gradient, norm and parameters
// after AdamW of one rank running all M micro-batches itself: the exact int64 sums reduce to
// the same integers in any grouping. With one rank (a single process) the same code runs the
// one-rank communicator path (nothing to reduce); the reduction itself needs mpirun -np >= 2.
void expect_group_step_equals_one_rank(bool use_nccl, int A) {
  MpiComm world(MPI_COMM_WORLD, false);
  const int gpu = my_gpu(world);
  const ModelConfig model = small_model();
  const int B = 2, T = model.context, R = world.size();
  const std::int64_t M = static_cast<std::int64_t>(A) * R;
  auto engine = make_cuda_engine(model, gpu, B);
  auto local = make_cuda_engine(model, gpu, B);
  const ParamLayout& layout = engine->layout();
  const std::size_t n = layout.total();
  std::vector<float> params(n);
  init_gpt2(layout, params, 11);
  engine->set_params(params);
  local->set_params(params);
  std::unique_ptr<Communicator> nccl;
  Communicator* reduce = &world;
  if (use_nccl) {
    nccl = make_nccl_comm(world, gpu);
    reduce = nccl.get();
  }
  auto batch_of = [&](std::int64_t k, std::vector<std::int32_t>& in,
                      std::vector<std::int32_t>& tg) {
    in = random_tokens(static_cast<std::size_t>(B) * T, model.vocab_size,
                       100 + static_cast<std::uint64_t>(k));
    tg = random_tokens(in.size(), model.vocab_size, 200 + static_cast<std::uint64_t>(k));
    return Batch{in.data(), tg.data(), B, T};
  };
  std::vector<std::int32_t> in, tg;
  engine->begin_step(M);
  for (int a = 0; a < A; ++a)  // rank r's micro-batches: r * A .. r * A + A - 1
    engine->forward_backward(batch_of(world.rank() * A + a, in, tg), a == A - 1 ? reduce : nullptr);
  local->begin_step(M);
  for (std::int64_t k = 0; k < M; ++k) local->forward_backward(batch_of(k, in, tg), nullptr);
  std::vector<float> got(n), want(n);
  engine->get_grads(got);
  local->get_grads(want);
  EXPECT_EQ(first_difference(got, want), n);
  const float got_norm = engine->optimizer_step(AdamWStep{1e-3f});
  const float want_norm = local->optimizer_step(AdamWStep{1e-3f});
  EXPECT_EQ(got_norm, want_norm);
  EXPECT_TRUE(std::isfinite(got_norm));
  std::vector<float> got_p(n), want_p(n);
  engine->get_params(got_p);
  local->get_params(want_p);
  EXPECT_TRUE(same_bits(got_p, want_p));
  if (M > 1 && R > 1) {
    // The step's n sums and the rejected-term count, as int64.
    EXPECT_GE(reduce->bytes_sent(), (n + 1) * sizeof(std::int64_t));
  } else {
    EXPECT_EQ(reduce->bytes_sent(), 0u);
  }
  // A step of one micro-batch cannot be reduced over several ranks (every rank throws before
  // any collective, so none waits).
  if (R > 1) {
    engine->begin_step(1);
    EXPECT_THROW(engine->forward_backward(batch_of(0, in, tg), reduce), std::invalid_argument);
  }
}

TEST(NcclComm, EngineStepOverNcclEqualsOneRankWithAllMicroBatches) {
  BTM_SKIP_WITHOUT_GPU();
  BTM_SKIP_WITHOUT_A_GPU_PER_RANK();
  expect_group_step_equals_one_rank(true, 1);  // M = R: one micro-batch per rank
  expect_group_step_equals_one_rank(true, 2);  // M = 2R: accumulation, then the reduction
}

TEST(NcclComm, EngineStepOverHostMpiEqualsOneRankWithAllMicroBatches) {
  BTM_SKIP_WITHOUT_GPU();
  expect_group_step_equals_one_rank(false, 1);
  expect_group_step_equals_one_rank(false, 2);
}

// The same over a real group only (skipped as a single process): M = R micro-batches on R
// ranks against one rank's M micro-steps, over NCCL.
TEST(NcclComm, GroupReduceEqualsOneRankWithMMicroSteps) {
  BTM_SKIP_WITHOUT_GPU();
  MpiComm world(MPI_COMM_WORLD, false);
  if (world.size() < 2)
    GTEST_SKIP() << "needs a group: mpirun -np 2 (or more) btm_gpu_tests on >= 2 GPUs";
  BTM_SKIP_WITHOUT_A_GPU_PER_RANK();
  expect_group_step_equals_one_rank(true, 1);
}

}  // namespace
}  // namespace btm

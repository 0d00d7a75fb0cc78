// The NCCL communicator and the CUDA engine's gradient averaging. Meaningful under
// `mpirun -np 2 btm_gpu_tests --gtest_filter='Nccl*'` on a machine with 2 GPUs (rank r uses
// GPU r % count); as a single process every test still runs on a group of one.
#include <gtest/gtest.h>
#include <mpi.h>

#include <numeric>
#include <vector>

#include "btm/comm.hpp"
#include "btm/cuda_comm.hpp"
#include "btm/cuda_engine.hpp"
#include "btm/engine.hpp"
#include "btm/params.hpp"
#include "gpu_test_util.hpp"

namespace btm {
namespace {

using namespace gputest;

int my_gpu(const MpiComm& world) {
  return world.rank() % cuda_visible_devices();
}

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

// Rank r trains on batch r with the group communicator; the result must equal the average of
// every rank's batch gradient computed locally (grad_scale 1/R each, no communication).
void expect_engine_averages(bool use_nccl) {
  MpiComm world(MPI_COMM_WORLD, false);
  const int gpu = my_gpu(world);
  const ModelConfig model = small_model();
  const int B = 2, T = model.context, R = world.size();
  auto engine = make_cuda_engine(model, gpu, B);
  auto local = make_cuda_engine(model, gpu, B);
  const ParamLayout& layout = engine->layout();
  std::vector<float> params(layout.total());
  init_gpt2(layout, params, 11);
  engine->set_params(params);
  local->set_params(params);
  std::unique_ptr<Communicator> nccl;
  Communicator* reduce = &world;
  if (use_nccl) {
    nccl = make_nccl_comm(world, gpu);
    reduce = nccl.get();
  }
  auto batch_of = [&](int r, std::vector<std::int32_t>& in, std::vector<std::int32_t>& tg) {
    in = random_tokens(static_cast<std::size_t>(B) * T, model.vocab_size, 100 + r);
    tg = random_tokens(in.size(), model.vocab_size, 200 + r);
    return Batch{in.data(), tg.data(), B, T};
  };
  std::vector<std::int32_t> in, tg;
  engine->zero_grad();
  engine->forward_backward(batch_of(world.rank(), in, tg), 1.0f, reduce);
  local->zero_grad();
  for (int r = 0; r < R; ++r)
    local->forward_backward(batch_of(r, in, tg), 1.0f / static_cast<float>(R), nullptr);
  std::vector<float> got(layout.total()), want(layout.total());
  engine->get_grads(got);
  local->get_grads(want);
  const Errors e = compare(got, want);
  EXPECT_LE(e.rel_l2, 1e-6);
  EXPECT_LE(e.max_norm, 1e-5);
  if (use_nccl && R > 1) {
    EXPECT_GE(reduce->bytes_sent(), layout.total() * sizeof(float));
  }
}

TEST(NcclComm, EngineAveragesGradientsOverNccl) {
  BTM_SKIP_WITHOUT_GPU();
  expect_engine_averages(true);
}

TEST(NcclComm, EngineAveragesGradientsOverHostMpi) {
  BTM_SKIP_WITHOUT_GPU();
  expect_engine_averages(false);
}

}  // namespace
}  // namespace btm

// `btm bench` on the GPU: the CUDA engine's JSON lines carry measured figures (tokens/s, MFU
// against the default 989 TFLOP/s peak, device memory, the attention kernel used).
#include <gtest/gtest.h>

#include <string>

#include "btm/cuda/kernels.hpp"
#include "gpu_test_util.hpp"
#include "test_util.hpp"

namespace btm {
namespace {

double field(const std::string& line, const std::string& name) {
  const auto at = line.find("\"" + name + "\": ");
  if (at == std::string::npos) return -1;
  return std::stod(line.substr(at + name.size() + 4));
}

std::string line_of(const std::string& output, const std::string& start) {
  const auto at = output.find(start);
  if (at == std::string::npos) return {};
  return output.substr(at, output.find('\n', at) - at);
}

TEST(CudaBench, BtmBenchReportsMeasuredFigures) {
  BTM_SKIP_WITHOUT_GPU();
  const auto r = test::run_btm(
      "bench --run.device cuda --model.n_layer 2 --model.d_model 128 --model.n_head 2 "
      "--model.context 64 "
      "--data.batch 4 --steps 5 --warmup 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string train = line_of(r.output, "{\"case\": \"train\"");
  ASSERT_FALSE(train.empty()) << r.output;
  EXPECT_NE(train.find("\"system\": \"btm-cuda\""), std::string::npos) << train;
  EXPECT_NE(train.find("\"attention\": \"flash\""), std::string::npos) << train;  // head dim 64
  const std::string kernels = cuda::flash_wgmma_available() ? "wgmma" : "mma.sync";
  EXPECT_NE(train.find("\"flash_kernels\": \"" + kernels + "\""), std::string::npos) << train;
  EXPECT_GT(field(train, "tokens_per_s"), 0) << train;
  EXPECT_GT(field(train, "mfu"), 0) << train;
  EXPECT_LT(field(train, "mfu"), 1) << train;
  EXPECT_GT(field(train, "mem_gib"), 0) << train;
  EXPECT_NE(field(train, "loss_first"), field(train, "loss")) << train;
  const std::string eval = line_of(r.output, "{\"case\": \"eval\"");
  EXPECT_GT(field(eval, "tokens_per_s"), 0) << r.output;
  EXPECT_EQ(r.output.find("nan"), std::string::npos) << r.output;
}

// --attention flash-mma.sync runs (and reports) the pre-Hopper flash kernels on any GPU.
TEST(CudaBench, AttentionOptionPicksTheFlashKernels) {
  BTM_SKIP_WITHOUT_GPU();
  const std::string tiny =
      "bench --run.device cuda --model.n_layer 1 --model.d_model 128 --model.n_head 2 "
      "--model.context 64 --data.batch 2 --steps 2 --warmup 1 --cases train ";
  const auto r = test::run_btm(tiny + "--attention flash-mma.sync");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string train = line_of(r.output, "{\"case\": \"train\"");
  EXPECT_NE(train.find("\"flash_kernels\": \"mma.sync\""), std::string::npos) << r.output;
}

}  // namespace
}  // namespace btm

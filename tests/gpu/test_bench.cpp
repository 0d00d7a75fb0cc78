// `btm bench` on the GPU: the CUDA engine's JSON lines carry measured figures (tokens/s, MFU
// against the default 989 TFLOP/s peak, device memory, the attention kernel used), and
// `--cases kernels` times the kernel cases (cuda/kernel_cases.hpp), one line per case; without
// a GPU it refuses with exit code 2.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "btm/cuda/kernel_cases.hpp"
#include "btm/cuda/kernels.hpp"
#include "gpu_test_util.hpp"
#include "test_util.hpp"

namespace btm {
namespace {

// A number of a bench JSON line; -1 where the line or the field is missing.
double field(const std::string& line, const std::string& name) {
  const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.contains(name) || !j[name].is_number()) return -1;
  return j[name].get<double>();
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

// --cases kernels --kernels gelu_: one line per kernel case whose name holds it, each with its
// shape and measured time, bandwidth and FLOP rate, in the table's order.
TEST(CudaBench, KernelCasesPrintOneLinePerCase) {
  BTM_SKIP_WITHOUT_GPU();
  const auto r = test::run_btm("bench --cases kernels --kernels gelu_ --steps 3 --warmup 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<std::string> want;
  for (const cuda::KernelCase& c : cuda::kernel_cases())
    if (c.name.find("gelu_") != std::string::npos) want.push_back(c.name);
  ASSERT_FALSE(want.empty());
  std::size_t at = 0;
  for (const std::string& name : want) {
    SCOPED_TRACE(name);
    at = r.output.find("\"name\": \"" + name + "\"", at);
    ASSERT_NE(at, std::string::npos) << r.output;
    const std::string line = r.output.substr(
        r.output.rfind('\n', at) + 1, r.output.find('\n', at) - r.output.rfind('\n', at) - 1);
    EXPECT_EQ(line.rfind("{\"case\": \"kernel\"", 0), 0u) << line;
    EXPECT_NE(line.find("\"shape\": {"), std::string::npos) << line;
    if (line.find("\"skipped\"") != std::string::npos) continue;
    EXPECT_GT(field(line, "ms"), 0) << line;
    EXPECT_GT(field(line, "gb_per_s"), 0) << line;
    EXPECT_GE(field(line, "tflop_per_s"), 0) << line;
    EXPECT_EQ(field(line, "iterations"), 3) << line;
  }
  EXPECT_EQ(r.output.find("nan"), std::string::npos) << r.output;
}

// Without a GPU, --cases kernels says it needs one and exits with 2 (bad input), as a CPU-only
// build does (it needs a CUDA build); an unknown --kernels filter is refused the same way.
TEST(CudaBench, KernelCasesNeedAGpu) {
  if (cuda_visible_devices() > 0) {
    const auto r = test::run_btm("bench --cases kernels --kernels no_such_case");
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("no kernel case"), std::string::npos) << r.output;
    return;
  }
  const auto r = test::run_btm("bench --cases kernels");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("needs a GPU"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace btm

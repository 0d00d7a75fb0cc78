// The throughput benchmark as an opt-in test (no CMake target of its own): set
//   BTM_BENCH="layers,dim,heads,seq,batch,vocab"  (e.g. "12,768,12,1024,32,50304")
// and optionally BTM_BENCH_STEPS (20), BTM_BENCH_WARMUP (5), BTM_BENCH_PEAK_TFLOPS (989),
// BTM_BENCH_ATTENTION (auto | flash | materialized);
// the JSON line goes to stdout. Without BTM_BENCH the test is skipped, and a tiny smoke run
// checks that the line is well-formed.
#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>
#include <string>

#include "btm/cuda_bench.hpp"
#include "gpu_test_util.hpp"

namespace btm {
namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::atoi(v) : fallback;
}

TEST(CudaBench, SmokeLineIsJson) {
  BTM_SKIP_WITHOUT_GPU();
  ModelConfig m;  // the default tiny model
  std::ostringstream out;
  bench_engine_json(m, 2, 2, 1, 989.0, out);
  const std::string line = out.str();
  EXPECT_EQ(line.front(), '{');
  EXPECT_NE(line.find("\"tokens_per_s\": "), std::string::npos) << line;
  EXPECT_NE(line.find("\"mfu\": "), std::string::npos) << line;
  EXPECT_EQ(line.find("nan"), std::string::npos) << line;
}

TEST(CudaBench, FromEnvironment) {
  BTM_SKIP_WITHOUT_GPU();
  const char* spec = std::getenv("BTM_BENCH");
  if (spec == nullptr) GTEST_SKIP() << "set BTM_BENCH=layers,dim,heads,seq,batch,vocab to run";
  ModelConfig m;
  int batch = 0;
  char sep = 0;
  std::istringstream in(spec);
  in >> m.n_layer >> sep >> m.d_model >> sep >> m.n_head >> sep >> m.context >> sep >> batch >>
      sep >> m.vocab_size;
  ASSERT_TRUE(in) << "BTM_BENCH='" << spec << "' is not layers,dim,heads,seq,batch,vocab";
  const char* peak = std::getenv("BTM_BENCH_PEAK_TFLOPS");
  const char* kernel = std::getenv("BTM_BENCH_ATTENTION");  // auto | flash | materialized
  const std::string attention = kernel != nullptr ? kernel : "auto";
  ASSERT_TRUE(attention == "auto" || attention == "flash" || attention == "materialized")
      << "BTM_BENCH_ATTENTION='" << attention << "': use auto, flash or materialized";
  bench_engine_json(m, batch, env_int("BTM_BENCH_STEPS", 20), env_int("BTM_BENCH_WARMUP", 5),
                    peak != nullptr ? std::atof(peak) : 989.0, std::cout,
                    attention == "flash"          ? CudaAttention::Flash
                    : attention == "materialized" ? CudaAttention::Materialized
                                                  : CudaAttention::Auto);
}

}  // namespace
}  // namespace btm

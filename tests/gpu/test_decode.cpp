// The CUDA engine's incremental decoding (key/value cache) against its own full forward and the
// CPU engine's decoding: the logits of every position of a prompt, single steps and a chunk,
// for the materialized (head dim 16) and flash (head dim 64) models, at the largest batch.
// Thresholds as the engine test's logits (bf16 activations): rel L2 <= 0.02, max-norm <= 0.05.
#include <gtest/gtest.h>

#include <vector>

#include "btm/cpu/engine.hpp"
#include "btm/cuda/engine.hpp"
#include "btm/model/params.hpp"
#include "btm/util/error.hpp"
#include "gpu_test_util.hpp"

namespace btm {
namespace {

using namespace gputest;

ModelConfig decode_model(int n_head, int d_model) {
  ModelConfig m;
  m.n_layer = 2;
  m.n_head = n_head;
  m.d_model = d_model;
  m.context = 80;
  m.vocab_size = 100;
  m.vocab_multiple = 64;
  return m;
}

void check_decoding(const ModelConfig& model, CudaAttention attention) {
  const int B = 3, T = model.context;
  auto gpu = make_cuda_engine(model, 0, B, attention);
  auto cpu = make_cpu_engine(model, 0);
  std::vector<float> params(ParamLayout(model).total());
  init_gpt2(ParamLayout(model), params, 5);
  gpu->set_params(params);
  cpu->set_params(params);
  EXPECT_EQ(gpu->decode_mode(), "kv-cache");
  const auto tokens = random_tokens(static_cast<std::size_t>(B) * T, model.vocab_size, 6);
  const std::size_t Vp = static_cast<std::size_t>(model.padded_vocab());
  std::vector<float> full(static_cast<std::size_t>(B) * T * Vp);
  gpu->logits({tokens.data(), nullptr, B, T}, full.data());
  std::vector<int> chunks = {7, 1, 1, 3};
  for (int used = 12; used < T; ++used) chunks.push_back(1);
  gpu->begin_decode(B, T);
  cpu->begin_decode(B, T);
  int pos = 0;
  for (int n : chunks) {
    std::vector<std::int32_t> part(static_cast<std::size_t>(B) * n);
    std::vector<float> want(part.size() * Vp);
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < n; ++i) {
        part[static_cast<std::size_t>(b * n + i)] =
            tokens[static_cast<std::size_t>(b * T + pos + i)];
        std::copy_n(full.begin() + static_cast<std::ptrdiff_t>((b * T + pos + i) * Vp), Vp,
                    want.begin() + static_cast<std::ptrdiff_t>((b * n + i) * Vp));
      }
    std::vector<float> got(part.size() * Vp), cpu_got(part.size() * Vp);
    gpu->decode(part.data(), n, got.data());
    cpu->decode(part.data(), n, cpu_got.data());
    SCOPED_TRACE("positions " + std::to_string(pos) + ".." + std::to_string(pos + n - 1));
    BTM_EXPECT_CLOSE(got, want, 0.05, 0.02);
    BTM_EXPECT_CLOSE(got, cpu_got, 0.05, 0.02);
    pos += n;
  }
  // Past the capacity: refused.
  std::vector<float> out(static_cast<std::size_t>(B) * Vp);
  EXPECT_THROW(gpu->decode(tokens.data(), 1, out.data()), InputError);
  EXPECT_THROW(gpu->begin_decode(B + 1, 4), std::invalid_argument);
}

TEST(CudaDecode, MaterializedEngineDecodesAsItsFullForward) {
  BTM_SKIP_WITHOUT_GPU();
  check_decoding(decode_model(4, 64), CudaAttention::Materialized);
}

TEST(CudaDecode, FlashEngineDecodesAsItsFullForward) {
  BTM_SKIP_WITHOUT_GPU();
  check_decoding(decode_model(2, 128), CudaAttention::Flash);
}

}  // namespace
}  // namespace btm

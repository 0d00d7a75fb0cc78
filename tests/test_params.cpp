#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "btm/method/schedule.hpp"
#include "btm/model/params.hpp"

using namespace btm;

TEST(Params, GPT2SmallHasTheKnownParameterCount) {
  ModelConfig m;
  m.n_layer = 12;
  m.n_head = 12;
  m.d_model = 768;
  m.context = 1024;
  m.vocab_size = 50257;
  ParamLayout layout(m);
  EXPECT_EQ(m.padded_vocab(), 50304);
  // GPT-2 124M: 124,439,808 parameters with vocab 50257; padding adds 47 * 768.
  EXPECT_EQ(layout.total(), 124439808u + 47u * 768u);
  EXPECT_EQ(layout.find("h.11.mlp.c_proj.bias").offset + 768, layout.find("ln_f.weight").offset);
}

TEST(Params, LayoutIsContiguousAndBlocksAreOrdered) {
  ModelConfig m;
  m.n_layer = 3;
  ParamLayout layout(m);
  std::size_t next = 0;
  for (const TensorSpec& t : layout.tensors()) {
    EXPECT_EQ(t.offset, next) << t.name;
    next += t.size;
    EXPECT_EQ(t.weight_decay, t.shape.size() == 2) << t.name;
  }
  EXPECT_EQ(next, layout.total());
  for (int l = 0; l + 1 < m.n_layer; ++l) EXPECT_EQ(layout.block(l).end, layout.block(l + 1).begin);
}

TEST(Params, Gpt2InitialisationHasTheRightStatistics) {
  ModelConfig m;
  m.n_layer = 4;
  m.d_model = 128;
  m.n_head = 4;
  m.context = 32;
  ParamLayout layout(m);
  std::vector<float> p(layout.total());
  init_gpt2(layout, p, 7);
  auto stddev = [&](const std::string& name) {
    const TensorSpec& t = layout.find(name);
    double s = 0, s2 = 0;
    for (std::size_t i = 0; i < t.size; ++i) {
      s += p[t.offset + i];
      s2 += p[t.offset + i] * p[t.offset + i];
    }
    const double mean = s / t.size;
    return std::sqrt(s2 / t.size - mean * mean);
  };
  EXPECT_NEAR(stddev("h.0.mlp.c_fc.weight"), 0.02, 0.001);
  EXPECT_NEAR(stddev("h.2.attn.c_proj.weight"), 0.02 / std::sqrt(8.0), 0.001);
  EXPECT_EQ(p[layout.find("h.1.ln_2.weight").offset], 1.0f);
  EXPECT_EQ(p[layout.find("h.1.ln_2.bias").offset], 0.0f);
  // Padded vocab rows are zero.
  const std::size_t first_pad = static_cast<std::size_t>(m.vocab_size) * m.d_model;
  for (std::size_t i = first_pad; i < layout.find("wte").size; ++i) ASSERT_EQ(p[i], 0.0f);
  // Same seed, same bytes; another seed, other values.
  std::vector<float> q(layout.total()), r(layout.total());
  init_gpt2(layout, q, 7);
  init_gpt2(layout, r, 8);
  EXPECT_EQ(p, q);
  EXPECT_NE(p, r);
}

TEST(Schedule, WarmupThenLinearDecayToTheFloor) {
  OptimConfig o;
  o.lr = 1.0;
  o.warmup_fraction = 0.1;
  o.min_lr_ratio = 0.1;
  o.decay = Decay::linear;
  // 100 steps: warmup 10 steps (lr (s+1)/10), then 90 steps from 1.0 down to 0.1.
  EXPECT_DOUBLE_EQ(learning_rate(o, 0, 100), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate(o, 9, 100), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(o, 10, 100), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(o, 99, 100), 0.1);
  EXPECT_NEAR(learning_rate(o, 54, 100), 0.1 + 0.9 * (1.0 - 44.0 / 89.0), 1e-12);
}

TEST(Schedule, CosineDecayHitsHalfwayAtTheMidpoint) {
  OptimConfig o;
  o.lr = 2.0;
  o.warmup_fraction = 0.0;
  o.min_lr_ratio = 0.0;
  o.decay = Decay::cosine;
  EXPECT_DOUBLE_EQ(learning_rate(o, 0, 101), 2.0);
  EXPECT_NEAR(learning_rate(o, 50, 101), 1.0, 1e-12);
  EXPECT_NEAR(learning_rate(o, 100, 101), 0.0, 1e-12);
}

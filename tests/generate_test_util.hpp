// generate_test_util.hpp: what the generation tests (test_generate.cpp, mpi/test_generate.cpp)
// share: a forest of ELMs with random parameters (no training needed to test sampling), on a
// byte-tokenizer corpus so the command can tell the tokenizer.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "btm/config/config.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/forest.hpp"
#include "btm/model/params.hpp"
#include "btm/util/rng.hpp"
#include "test_util.hpp"

namespace btm::test {

// A 2-layer GPT small enough to run in milliseconds, on the byte tokenizer (257 ids).
inline ModelConfig generate_model() {
  ModelConfig m;
  m.n_layer = 2;
  m.n_head = 2;
  m.d_model = 16;
  m.context = 24;
  m.vocab_size = 257;
  m.vocab_multiple = 64;
  return m;
}

// Parameters uniform in [-scale, scale) (padded vocabulary rows zero): sharper distributions
// and attention than GPT-2's initialisation, so a wrong position or cache entry shows.
inline std::vector<float> random_params(const ModelConfig& model, std::uint64_t seed,
                                        float scale = 0.4f) {
  const ParamLayout layout(model);
  std::vector<float> p(layout.total());
  Rng rng(seed);
  for (float& x : p) x = static_cast<float>((2 * rng.uniform() - 1) * scale);
  const std::size_t C = static_cast<std::size_t>(model.d_model);
  for (std::size_t row = static_cast<std::size_t>(model.vocab_size);
       row < static_cast<std::size_t>(model.padded_vocab()); ++row)
    for (std::size_t c = 0; c < C; ++c) p[layout.wte() + row * C + c] = 0;
  return p;
}

// RUN (run_dir) with forest.h5 and one trained ELM per name (random parameters, seed 10 + j),
// trained on corpus/NAME.h5 (synthetic byte corpora, written too). Returns the config.
inline Config make_generate_forest(const std::filesystem::path& corpus,
                                   const std::filesystem::path& run_dir,
                                   const std::vector<std::string>& names) {
  Config c;
  c.model = generate_model();
  c.data.corpus = corpus.string();
  c.data.domains = names;
  c.run.dir = run_dir.string();
  c.run.device = Device::cpu;
  c.run.threads = 1;
  std::filesystem::create_directories(corpus);
  std::filesystem::create_directories(run_dir / "elms");
  Forest forest;
  forest.config_ini = to_ini(c);
  for (std::size_t j = 0; j < names.size(); ++j) {
    write_synthetic_corpus(corpus, names[j], j + 1, 2000);
    Checkpoint ck;
    ck.name = names[j];
    ck.model = c.model;
    ck.params = random_params(c.model, 10 + j);
    ck.adam_m.assign(ck.params.size(), 0.0f);
    ck.adam_v.assign(ck.params.size(), 0.0f);
    ck.step = ck.target_steps = ck.schedule_steps = 1;
    ck.domains = {names[j]};
    ck.config_ini = forest.config_ini;
    save_checkpoint(checkpoint_file(run_dir, names[j]), ck);
    ModelRecord r;
    r.name = names[j];
    r.kind = ModelKind::elm;
    r.domains = {names[j]};
    r.status = ModelStatus::trained;
    r.steps = 1;
    r.checkpoint = (std::filesystem::path("elms") / (names[j] + ".h5")).string();
    forest.upsert(r);
  }
  save_forest(run_dir, forest);
  return c;
}

}  // namespace btm::test

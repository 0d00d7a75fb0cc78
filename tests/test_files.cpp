// Files that explain themselves (docs/files.md): a checkpoint's /layout, tokenizer, build and
// time; weights-only checkpoints in fp32 and bf16; older checkpoints still load; training
// refuses another vocabulary; eval.h5's dimension scales, /loss and /checkpoint_steps; and on a
// tiny run, commands that read the forest's config, with every h5py snippet of docs/files.md.
#include <gtest/gtest.h>
#include <hdf5_hl.h>

#include <cmath>
#include <functional>
#include <regex>

#include "btm/io/checkpoint.hpp"
#include "btm/io/eval_file.hpp"
#include "btm/io/forest.hpp"
#include "btm/io/h5.hpp"
#include "btm/io/safetensors.hpp"
#include "btm/model/params.hpp"
#include "btm/pipeline/trainer.hpp"
#include "btm/util/build_info.hpp"
#include "btm/util/error.hpp"
#include "test_util.hpp"

namespace btm {
namespace {

using btm::test::error_of;

namespace fs = std::filesystem;

Checkpoint trained_checkpoint() {
  Checkpoint c;
  c.name = "legal";
  c.model = test::small_model();
  const ParamLayout layout(c.model);
  c.params.resize(layout.total());
  init_gpt2(layout, c.params, 5);
  c.adam_m.assign(layout.total(), 0.125f);
  c.adam_v.assign(layout.total(), 0.5f);
  c.step = c.target_steps = c.schedule_steps = 8;
  c.batch = {4, 2};
  c.domains = {"legal"};
  c.tokenizer = "byte";
  c.vocab_hash = make_tokenizer("byte")->vocab_hash();
  return c;
}

TEST(Files, ACheckpointRecordsItsLayoutTokenizerBuildAndTime) {
  test::TempDir dir;
  const Checkpoint a = trained_checkpoint();
  save_checkpoint(dir / "c.h5", a);
  const ParamLayout layout(a.model);
  {
    h5::Handle f = h5::open_file(dir / "c.h5", false);
    h5::Handle g = h5::open_group(f, "layout");
    const std::vector<std::string> names = h5::read_strings(g, "name");
    const auto shapes = h5::read_array<std::int64_t>(g, "shape");
    const auto offsets = h5::read_array<std::int64_t>(g, "offset");
    const auto counts = h5::read_array<std::int64_t>(g, "count");
    ASSERT_EQ(names.size(), layout.tensors().size());
    ASSERT_EQ(shapes.size(), 2 * names.size());
    std::int64_t covered = 0;
    for (std::size_t i = 0; i < names.size(); ++i) {
      const TensorSpec& t = layout.tensors()[i];
      EXPECT_EQ(names[i], t.name);
      EXPECT_EQ(offsets[i], static_cast<std::int64_t>(t.offset));
      EXPECT_EQ(counts[i], static_cast<std::int64_t>(t.size));
      const std::int64_t cols = shapes[2 * i + 1];
      EXPECT_EQ(shapes[2 * i] * (cols > 0 ? cols : 1), counts[i]) << t.name;
      covered += counts[i];
    }
    EXPECT_EQ(covered, static_cast<std::int64_t>(layout.total()));  // the whole flat vector
    EXPECT_EQ(h5::get_string(f, "btm_version"), btm_version());
    EXPECT_EQ(h5::get_string(f, "btm_commit"), btm_commit());
    EXPECT_TRUE(std::regex_match(h5::get_string(f, "written_at"),
                                 std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));
    EXPECT_EQ(h5::get_int(f, "format_version"), kCheckpointFormatVersion);
    EXPECT_EQ(h5::units_of(g, "offset"), "floats");
  }
  const Checkpoint b = load_checkpoint(dir / "c.h5", &a.model);
  EXPECT_EQ(b.tokenizer, "byte");
  EXPECT_EQ(b.vocab_hash, a.vocab_hash);
  EXPECT_EQ(b.btm_commit, btm_commit());
  EXPECT_FALSE(b.weights_only);
  EXPECT_EQ(b.params, a.params);
}

// A checkpoint of format 2 (no /layout, tokenizer, build or time) loads as before.
TEST(Files, ACheckpointOfFormat2StillLoads) {
  test::TempDir dir;
  const Checkpoint a = trained_checkpoint();
  save_checkpoint(dir / "old.h5", a);
  {
    h5::Handle f = h5::open_file(dir / "old.h5", true);
    ASSERT_GE(H5Ldelete(f, "layout", H5P_DEFAULT), 0);
    for (const char* attr : {"tokenizer", "vocab_hash", "btm_version", "btm_commit", "written_at",
                             "weights_only", "params_dtype"})
      ASSERT_GE(H5Adelete(f, attr), 0) << attr;
    h5::set_attr(f, "format_version", std::int64_t{2});
  }
  const Checkpoint b = load_checkpoint(dir / "old.h5", &a.model);
  EXPECT_EQ(b.params, a.params);
  EXPECT_EQ(b.adam_v, a.adam_v);
  EXPECT_EQ(b.tokenizer, "");
  EXPECT_EQ(b.btm_version, "");
  // A layout of another order is refused, naming the file.
  save_checkpoint(dir / "moved.h5", a);
  {
    h5::Handle f = h5::open_file(dir / "moved.h5", true);
    h5::Handle g = h5::open_group(f, "layout");
    ASSERT_GE(H5Ldelete(g, "offset", H5P_DEFAULT), 0);
    std::vector<std::int64_t> zeros(ParamLayout(a.model).tensors().size(), 0);
    h5::write_array(g, "offset", zeros.data(), zeros.size());
  }
  const std::string e = error_of([&] { load_checkpoint(dir / "moved.h5", &a.model); });
  EXPECT_NE(e.find("moved.h5"), std::string::npos) << e;
  EXPECT_NE(e.find("/layout"), std::string::npos) << e;
}

TEST(Files, AWeightsOnlyCheckpointHoldsParamsInFp32OrBf16AndIsNotTrainable) {
  test::TempDir dir;
  const Checkpoint a = trained_checkpoint();
  save_weights_only(dir / "w32.h5", a, false);
  save_weights_only(dir / "w16.h5", a, true);
  const Checkpoint f32 = load_checkpoint(dir / "w32.h5", &a.model, false);
  EXPECT_TRUE(f32.weights_only);
  EXPECT_EQ(f32.params, a.params);
  EXPECT_EQ(f32.tokenizer, "byte");
  const Checkpoint f16 = load_checkpoint(dir / "w16.h5", &a.model, false);
  ASSERT_EQ(f16.params.size(), a.params.size());
  std::size_t rounded = 0;
  for (std::size_t i = 0; i < a.params.size(); ++i) {
    EXPECT_EQ(f16.params[i],
              safetensors::float_from_bf16(safetensors::bf16_from_float(a.params[i])));
    EXPECT_LE(std::fabs(f16.params[i] - a.params[i]), std::fabs(a.params[i]) / 256);
    rounded += f16.params[i] != a.params[i];
  }
  EXPECT_GT(rounded, 0u);  // bf16 in the file, not fp32
  {
    h5::Handle f = h5::open_file(dir / "w16.h5", false);
    EXPECT_FALSE(h5::exists(f, "adam_m"));
    EXPECT_EQ(h5::get_string(f, "params_dtype"), "bfloat16");
    EXPECT_EQ(h5::get_int(f, "weights_only"), 1);
  }
  const std::string e = error_of([&] { load_checkpoint(dir / "w16.h5", &a.model, true); });
  EXPECT_NE(e.find("w16.h5"), std::string::npos) << e;
  EXPECT_NE(e.find("weights-only"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { load_state_vector(dir / "w32.h5", "adam_v", a.model); }), "");
}

TEST(Files, TrainingRefusesACorpusOfAnotherVocabulary) {
  const Checkpoint c = trained_checkpoint();
  CorpusInfo corpus;
  corpus.tokenizer = "byte";
  corpus.vocab_size = c.model.vocab_size;
  corpus.vocab_hash = c.vocab_hash;
  EXPECT_EQ(error_of([&] { check_vocabulary(c, "m.h5", corpus, "legal.h5"); }), "");
  CorpusInfo wider = corpus;
  wider.vocab_size = 257;
  std::string e = error_of([&] { check_vocabulary(c, "m.h5", wider, "legal.h5"); });
  EXPECT_NE(e.find("model.vocab_size 20"), std::string::npos) << e;
  EXPECT_NE(e.find("257 ids"), std::string::npos) << e;
  CorpusInfo gpt2 = corpus;
  gpt2.tokenizer = "gpt2";
  e = error_of([&] { check_vocabulary(c, "m.h5", gpt2, "legal.h5"); });
  EXPECT_NE(e.find("tokenized with byte"), std::string::npos) << e;
  EXPECT_NE(e.find("legal.h5 is tokenized with gpt2"), std::string::npos) << e;
  CorpusInfo other = corpus;
  other.vocab_hash = "fnv1a64:0000000000000001";
  e = error_of([&] { check_vocabulary(c, "m.h5", other, "legal.h5"); });
  EXPECT_NE(e.find(c.vocab_hash), std::string::npos) << e;
  EXPECT_NE(e.find(other.vocab_hash), std::string::npos) << e;
  // A model that has not trained yet (no tokenizer recorded) takes the corpus's.
  Checkpoint fresh = c;
  fresh.tokenizer.clear();
  fresh.vocab_hash.clear();
  EXPECT_EQ(error_of([&] { check_vocabulary(fresh, "m.h5", other, "legal.h5"); }), "");
}

TEST(Files, TokenizersHashTheirVocabulary) {
  const std::string byte = make_tokenizer("byte")->vocab_hash();
  EXPECT_TRUE(std::regex_match(byte, std::regex("fnv1a64:[0-9a-f]{16}"))) << byte;
  const std::string gpt2 = make_tokenizer("gpt2")->vocab_hash();
  EXPECT_TRUE(std::regex_match(gpt2, std::regex("fnv1a64:[0-9a-f]{16}"))) << gpt2;
  EXPECT_NE(byte, gpt2);
  EXPECT_EQ(make_tokenizer("gpt2")->vocab_hash(), gpt2);  // of the files, not of the run
}

// The label of dimension `dim` of dataset `name` and the first entry of its scale.
std::pair<std::string, std::string> dimension(hid_t root, const std::string& name, unsigned dim) {
  h5::Handle set(H5Dopen2(root, name.c_str(), H5P_DEFAULT));
  char label[64] = {};
  H5DSget_label(set, dim, label, sizeof(label));
  std::string first;
  H5DSiterate_scales(
      set, dim, nullptr,
      [](hid_t, unsigned, hid_t scale, void* out) -> herr_t {
        std::vector<std::string> values;
        char name[64] = {};
        H5Iget_name(scale, name, sizeof(name));
        const hid_t file = H5Iget_file_id(scale);
        values = h5::read_strings(file, name);
        H5Fclose(file);
        *static_cast<std::string*>(out) = values.empty() ? "" : values[0];
        return 1;
      },
      &first);
  return {label, first};
}

TEST(Files, EvalFileLabelsEveryDimensionAndHasTheLossAndTheScoredSteps) {
  test::TempDir dir;
  EvalResults r;
  r.elms = {"a", "b"};
  r.domains = {"a", "b", "held"};
  r.in_domain = {1, 1, 0};
  r.posterior = "prefix";
  r.methods = {"elm:a", "elm:b", "dense"};
  r.perplexity = {10, 20, 30, 40, 50, 60, 70, 80, NAN};
  r.mean_in_domain = {15, 45, 75};
  r.mean_out_domain = {30, 60, NAN};
  r.priors = {0.9, 0.1, 0.2, 0.8, 0.5, 0.5};
  r.schemes = {"uniform"};
  r.average_weights = {0.5, 0.5, 0.5, 0.5, 0.5, 0.5};
  r.tokens = {100, 200, 300};
  r.checkpoints = {"a", "b", "dense"};
  r.checkpoint_steps = {12, 12, 24};
  EvalCompute compute;
  compute.models = {"a", "b", "dense"};
  compute.continues = {"seed", "seed", "seed"};
  compute.steps = {12, 12, 24};
  compute.global_batch = {4, 4, 8};
  compute.tokens = {96, 96, 192};
  compute.flops = {1e6, 1e6, 2e6};
  compute.train_seconds = {1, 1, 2};
  r.compute = compute;
  write_eval_file(dir / "eval.h5", r);
  {
    h5::Handle f = h5::open_file(dir / "eval.h5", false);
    using Dim = std::pair<std::string, std::string>;
    EXPECT_EQ(dimension(f, "perplexity", 0), Dim("method", "elm:a"));
    EXPECT_EQ(dimension(f, "perplexity", 1), Dim("domain", "a"));
    EXPECT_EQ(dimension(f, "loss", 0), Dim("method", "elm:a"));
    EXPECT_EQ(dimension(f, "priors", 1), Dim("elm", "a"));
    EXPECT_EQ(dimension(f, "average_weights", 0), Dim("scheme", "uniform"));
    EXPECT_EQ(dimension(f, "average_weights", 2), Dim("elm", "a"));
    EXPECT_EQ(dimension(f, "tokens", 0), Dim("domain", "a"));
    EXPECT_EQ(dimension(f, "checkpoint_steps", 0), Dim("checkpoint", "a"));
    h5::Handle g = h5::open_group(f, "compute");
    EXPECT_EQ(dimension(g, "flops", 0), Dim("model", "a"));
    EXPECT_EQ(h5::units_of(g, "flops"), "FLOPs");
    const std::vector<double> loss = h5::read_array<double>(f, "loss");
    ASSERT_EQ(loss.size(), r.perplexity.size());
    for (std::size_t i = 0; i + 1 < loss.size(); ++i)
      EXPECT_DOUBLE_EQ(std::exp(loss[i]), r.perplexity[i]);
    EXPECT_TRUE(std::isnan(loss.back()));
    EXPECT_EQ(h5::units_of(f, "loss"), "nats/token");
    EXPECT_EQ(h5::get_string(f, "btm_commit"), btm_commit());
  }
  const EvalResults back = read_eval_file(dir / "eval.h5");
  EXPECT_EQ(back.checkpoints, r.checkpoints);
  EXPECT_EQ(back.checkpoint_steps, r.checkpoint_steps);
  EXPECT_EQ(back.btm_version, btm_version());
}

// On a tiny run: commands read the forest's config (no --config), refuse a contradicting model
// setting and a corpus of another vocabulary, export weights only; and every h5py snippet of
// docs/files.md runs on the files it wrote.
TEST(Files, CommandsKnowTheirForestAndTheDocumentedLayoutsAreTheFiles) {
  test::TempDir dir;
  const fs::path corpus = dir / "data" / "corpus";
  test::write_synthetic_corpus(corpus, "religious", 1, 3000);
  test::write_synthetic_corpus(corpus, "dictionary", 2, 3000);
  const std::string run = (dir / "runs" / "tiny").string();
  const std::string tiny =
      " --data.corpus " + corpus.string() +
      " --data.domains religious,dictionary --model.n_layer 1 --model.d_model 16 "
      "--model.n_head 2 --model.context 8 --run.steps 4 --run.threads 1 --run.device cpu "
      "--eval.blocks 2 --eval.prior_blocks 2 --eval.prior_batch 1";
  auto r = test::run_btm("run --run.dir " + run + tiny);
  ASSERT_EQ(r.exit_code, 0) << r.output;

  // Item 4: the stored config, no --config; a model flag that contradicts it is refused.
  r = test::run_btm("average --run.dir " + run + " --name avg");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_NE(load_forest(run).find("avg"), nullptr);
  EXPECT_EQ(peek_checkpoint(checkpoint_file(run, "avg")).model.d_model, 16);
  r = test::run_btm("average --run.dir " + run + " --name wide --model.d_model 32");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("model.d_model = 32 (given) differs from the forest's 16 (forest.h5)"),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(checkpoint_file(run, "wide")));
  r = test::run_btm("config --run.dir " + run + " --get model.n_layer");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find('1'), std::string::npos) << r.output;

  // A GPT-2-vocabulary model on byte corpora: refused before any work, naming both.
  r = test::run_btm("seed --data.corpus " + corpus.string() +
                    " --data.domains religious --run.dir " + (dir / "gpt2run").string() +
                    " --model.vocab_size 50257 --run.device cpu");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("257 ids but model.vocab_size is 50257"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "gpt2run" / "elms" / "seed.h5"));

  // Weights only, bf16: readable by btm (forest add) and h5py (the snippets below).
  const fs::path shared = dir / "religious-bf16.h5";
  r = test::run_btm("export --run.dir " + run + " --model religious --weights-only --dtype bf16 " +
                    "--out " + shared.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const CheckpointInfo info = peek_checkpoint(shared);
  EXPECT_TRUE(info.weights_only);
  EXPECT_EQ(info.tokenizer, "byte");
  EXPECT_EQ(info.vocab_hash, make_tokenizer("byte")->vocab_hash());
  r = test::run_btm("forest add --run.dir " + run + " --name shared --checkpoint " +
                    shared.string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(load_checkpoint(checkpoint_file(run, "shared"), nullptr, false).params,
            load_checkpoint(shared, nullptr, false).params);

  // A weights-only seed starts a new forest (zero moments, as an imported model).
  const fs::path from_shared = dir / "from-shared";
  r = test::run_btm("run --run.dir " + from_shared.string() + tiny + " --run.seed_checkpoint " +
                    shared.string() + " --run.elm_schedule fresh --run.dense false --no-eval");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(load_checkpoint(from_shared / "elms" / "seed.h5", nullptr, false).params,
            load_checkpoint(shared, nullptr, false).params);
  EXPECT_EQ(load_forest(from_shared).trained_elm_names().size(), 2u);

  r = test::run_command("cd " + dir.path().string() + " && /usr/bin/python3 " + test::source_dir() +
                        "/tests/files_doc.py " + test::source_dir() + "/docs/files.md");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ran 6 python blocks"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace btm

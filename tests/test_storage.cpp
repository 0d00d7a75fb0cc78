// HDF5 files: checkpoints, corpora, metrics and the forest manifest. Round trips, atomic
// writes, and refusal of files that cannot be trusted, with the file named in the error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <fstream>

#include "btm/data/corpus.hpp"
#include "btm/io/checkpoint.hpp"
#include "btm/io/checkpoint_writer.hpp"
#include "btm/io/forest.hpp"
#include "btm/io/h5.hpp"
#include "btm/io/metrics.hpp"
#include "btm/io/run_lock.hpp"
#include "btm/model/params.hpp"
#include "btm/util/error.hpp"
#include "test_util.hpp"

using namespace btm;
namespace fs = std::filesystem;

namespace {

using btm::test::error_of;

Checkpoint small_checkpoint() {
  Checkpoint c;
  c.name = "legal";
  c.model = btm::test::small_model();
  const std::size_t n = ParamLayout(c.model).total();
  c.params.resize(n);
  init_gpt2(ParamLayout(c.model), c.params, 3);
  c.adam_m.assign(n, 0.25f);
  c.adam_v.assign(n, 0.5f);
  c.step = 17;
  c.target_steps = 40;
  c.schedule_steps = 40;
  c.batch = {4, 6};
  c.sampler_seed = 0xDEADBEEFull;
  c.sampler_position = 1234;
  c.tokens = 99999;
  c.domains = {"legal"};
  c.config_ini = "[model]\nn_layer = 1\n";
  return c;
}

// Messes with one dataset of an existing HDF5 file.
void overwrite_float(const fs::path& file, const char* dataset, std::size_t index, float value) {
  h5::Handle f = h5::open_file(file, true);
  h5::Handle set(H5Dopen2(f, dataset, H5P_DEFAULT));
  h5::Handle space(H5Dget_space(set));
  hsize_t offset = index, count = 1;
  H5Sselect_hyperslab(space, H5S_SELECT_SET, &offset, nullptr, &count, nullptr);
  h5::Handle mem(H5Screate_simple(1, &count, nullptr));
  H5Dwrite(set, H5T_NATIVE_FLOAT, mem, space, H5P_DEFAULT, &value);
}

}  // namespace

TEST(Checkpoint, RoundTripKeepsEveryField) {
  btm::test::TempDir dir;
  const Checkpoint a = small_checkpoint();
  save_checkpoint(dir / "c.h5", a);
  const Checkpoint b = load_checkpoint(dir / "c.h5", &a.model);
  EXPECT_EQ(b.name, a.name);
  EXPECT_EQ(b.model, a.model);
  EXPECT_EQ(b.step, a.step);
  EXPECT_EQ(b.target_steps, a.target_steps);
  EXPECT_EQ(b.schedule_steps, a.schedule_steps);
  EXPECT_EQ(b.batch, a.batch);
  EXPECT_EQ(b.sampler_seed, a.sampler_seed);
  EXPECT_EQ(b.sampler_position, a.sampler_position);
  EXPECT_EQ(b.tokens, a.tokens);
  EXPECT_EQ(b.domains, a.domains);
  EXPECT_EQ(b.config_ini, a.config_ini);
  EXPECT_EQ(b.params, a.params);
  EXPECT_EQ(b.adam_m, a.adam_m);
  EXPECT_EQ(b.adam_v, a.adam_v);
  // One state vector alone, with the same checks.
  EXPECT_EQ(load_state_vector(dir / "c.h5", "adam_m", a.model), a.adam_m);
  Checkpoint other = a;
  other.model.d_model = 16;
  EXPECT_NE(error_of([&] { load_state_vector(dir / "c.h5", "params", other.model); }).find("c.h5"),
            std::string::npos);
  // Nothing but the checkpoint is left in the directory (no temporary file).
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

// A branch not trained yet holds only its header and reads its state from the checkpoint it
// refers to, while that one still holds the state it was branched from.
TEST(Checkpoint, AReferenceReadsTheStateOfItsSourceAndNoticesItChanged) {
  btm::test::TempDir dir;
  const Checkpoint seed = small_checkpoint();
  save_checkpoint(dir / "seed.h5", seed);
  CheckpointInfo branch = seed;
  branch.name = "a";
  branch.domains = {"a"};
  branch.sampler_position = 0;
  save_checkpoint_reference(dir / "a.h5", branch, dir / "seed.h5");
  {
    h5::Handle f = h5::open_file(dir / "a.h5", false);
    EXPECT_FALSE(h5::exists(f, "params"));  // no copy of the seed
  }
  const CheckpointInfo head = peek_checkpoint(dir / "a.h5");
  EXPECT_EQ(head.state_from, "seed.h5");
  EXPECT_EQ(head.state_from_step, seed.step);
  const Checkpoint a = load_checkpoint(dir / "a.h5", &seed.model);
  EXPECT_EQ(a.name, "a");
  EXPECT_EQ(a.domains, std::vector<std::string>{"a"});
  EXPECT_EQ(a.params, seed.params);
  EXPECT_EQ(a.adam_m, seed.adam_m);
  EXPECT_EQ(a.adam_v, seed.adam_v);
  EXPECT_EQ(load_state_vector(dir / "a.h5", "adam_v", seed.model), seed.adam_v);
  // Its first save holds the state itself.
  save_checkpoint(dir / "a2.h5", a);
  EXPECT_EQ(peek_checkpoint(dir / "a2.h5").state_from, "");
  EXPECT_EQ(load_checkpoint(dir / "a2.h5").params, seed.params);

  // The source trained on: the reference no longer describes it.
  Checkpoint later = seed;
  later.step += 1;
  later.target_steps = std::max(later.target_steps, later.step);
  later.schedule_steps = std::max(later.schedule_steps, later.target_steps);
  save_checkpoint(dir / "seed.h5", later);
  std::string e = error_of([&] { load_checkpoint(dir / "a.h5"); });
  EXPECT_NE(e.find("a.h5"), std::string::npos) << e;
  EXPECT_NE(e.find("now holds another state"), std::string::npos) << e;
  // The source gone.
  fs::remove(dir / "seed.h5");
  e = error_of([&] { load_state_vector(dir / "a.h5", "params", seed.model); });
  EXPECT_NE(e.find("which is missing"), std::string::npos) << e;
}

TEST(Checkpoint, RefusesFilesItCannotTrustAndNamesThem) {
  btm::test::TempDir dir;
  const Checkpoint a = small_checkpoint();
  const fs::path good = dir / "good.h5";
  save_checkpoint(good, a);

  // Missing.
  EXPECT_NE(error_of([&] { load_checkpoint(dir / "missing.h5"); }).find("missing.h5"),
            std::string::npos);
  // Truncated.
  const fs::path cut = dir / "cut.h5";
  fs::copy_file(good, cut);
  fs::resize_file(cut, fs::file_size(cut) / 2);
  std::string e = error_of([&] { load_checkpoint(cut); });
  EXPECT_NE(e.find("cut.h5"), std::string::npos) << e;
  // Not HDF5 at all.
  { std::ofstream(dir / "text.h5") << "hello"; }
  e = error_of([&] { load_checkpoint(dir / "text.h5"); });
  EXPECT_NE(e.find("not an HDF5 file"), std::string::npos) << e;
  // Non-finite values.
  const fs::path nan = dir / "nan.h5";
  fs::copy_file(good, nan);
  overwrite_float(nan, "params", 5, std::nanf(""));
  e = error_of([&] { load_checkpoint(nan); });
  EXPECT_NE(e.find("nan.h5"), std::string::npos) << e;
  EXPECT_NE(e.find("non-finite"), std::string::npos) << e;
  // Another model shape than configured.
  ModelConfig other = a.model;
  other.d_model = 16;
  e = error_of([&] { load_checkpoint(good, &other); });
  EXPECT_NE(e.find("differs from the configured"), std::string::npos) << e;
  // Another format version.
  const fs::path old = dir / "old.h5";
  fs::copy_file(good, old);
  {
    h5::Handle f = h5::open_file(old, true);
    h5::set_attr(f, "format_version", std::int64_t{99});
  }
  e = error_of([&] { load_checkpoint(old); });
  EXPECT_NE(e.find("version 99"), std::string::npos) << e;
  // A corpus file is not a checkpoint.
  btm::test::write_synthetic_corpus(dir.path(), "d", 1, 1000);
  e = error_of([&] { load_checkpoint(dir / "d.h5"); });
  EXPECT_NE(e.find("not a btm checkpoint"), std::string::npos) << e;
}

// The file offset of the first chunk of a chunked dataset (H5Dget_chunk_info).
std::uint64_t first_chunk_offset(const fs::path& file, const char* dataset) {
  h5::Handle f = h5::open_file(file, false);
  h5::Handle set(H5Dopen2(f, dataset, H5P_DEFAULT));
  h5::Handle space(H5Dget_space(set));
  hsize_t offset[1] = {0}, size = 0;
  haddr_t address = 0;
  unsigned mask = 0;
  EXPECT_GE(H5Dget_chunk_info(set, space, 0, offset, &mask, &address, &size), 0);
  return address;
}

// One byte changed inside a dataset (not through HDF5, as a disk or a copy would damage it):
// the checksum catches it, and the message names the file, the dataset and what to do.
TEST(Checkpoint, AFlippedByteInsideADatasetFailsItsChecksum) {
  btm::test::TempDir dir;
  const Checkpoint a = small_checkpoint();
  for (const char* dataset : {"params", "adam_m", "adam_v"}) {
    const fs::path file = dir / (std::string(dataset) + ".h5");
    save_checkpoint(file, a);
    const std::uint64_t at = first_chunk_offset(file, dataset) + 10;
    {
      std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
      f.seekg(static_cast<std::streamoff>(at));
      char c = 0;
      f.read(&c, 1);
      c = static_cast<char>(c ^ 0x10);
      f.seekp(static_cast<std::streamoff>(at));
      f.write(&c, 1);
    }
    const std::string e = error_of([&] { load_checkpoint(file); });
    EXPECT_NE(e.find(file.filename().string()), std::string::npos) << e;
    EXPECT_NE(e.find(std::string("/") + dataset), std::string::npos) << e;
    EXPECT_NE(e.find("checksum"), std::string::npos) << e;
    EXPECT_NE(e.find("train the model again"), std::string::npos) << e;
  }
}

TEST(Checkpoint, AFailedWriteLeavesTheOldFileIntact) {
  btm::test::TempDir dir;
  const Checkpoint a = small_checkpoint();
  save_checkpoint(dir / "c.h5", a);
  Checkpoint broken = a;
  broken.params.pop_back();  // wrong size: the writer refuses before touching the file
  EXPECT_THROW(save_checkpoint(dir / "c.h5", broken), std::invalid_argument);
  EXPECT_EQ(load_checkpoint(dir / "c.h5").params, a.params);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
}

// Checkpoints written on the writer's thread: on disk after wait(), the next one reuses the last
// one's vectors, and a failed write's error reaches the trainer at the next call.
TEST(CheckpointWriter, WritesInTheBackgroundAndReportsFailures) {
  btm::test::TempDir dir;
  CheckpointWriter writer;
  Checkpoint a = small_checkpoint();
  EXPECT_TRUE(writer.buffer().params.empty());
  writer.write(dir / "a.h5", a);
  Checkpoint b = writer.buffer();  // waits: a is written, its vectors come back
  EXPECT_EQ(b.params.size(), a.params.size());
  EXPECT_EQ(load_checkpoint(dir / "a.h5").params, a.params);
  b = a;
  b.step = 18;
  std::ofstream(dir / "plain").put('x');  // a file where a directory would have to be
  writer.write(dir / "plain" / "b.h5", b);
  std::string error;
  try {
    writer.wait();
  } catch (const std::exception& e) {
    error = e.what();
  }
  EXPECT_NE(error.find("plain"), std::string::npos) << error;
  writer.wait();  // the error was reported once
  EXPECT_EQ(peek_checkpoint(dir / "a.h5").step, a.step);
}

// A write that keeps the parameters: they move out once the file is written (no copy), equal
// to the file's, and the buffer the next checkpoint gets still has parameters of the full size.
TEST(CheckpointWriter, KeepsTheWrittenParametersWithoutACopy) {
  btm::test::TempDir dir;
  CheckpointWriter writer;
  const Checkpoint a = small_checkpoint();
  std::vector<float> kept;
  writer.write(dir / "a.h5", a, &kept);
  writer.wait();
  EXPECT_EQ(kept, a.params);
  EXPECT_EQ(load_checkpoint(dir / "a.h5").params, a.params);
  const Checkpoint next = writer.buffer();
  EXPECT_EQ(next.params.size(), a.params.size());
  EXPECT_EQ(next.adam_m, a.adam_m);
}

TEST(Corpus, RoundTripThroughMemoryMap) {
  btm::test::TempDir dir;
  btm::test::write_synthetic_corpus(dir.path(), "news", 4, 5000);
  const DomainCorpus c = load_corpus(corpus_path(dir.path(), "news"), 257);
  EXPECT_EQ(c.info.domain, "news");
  EXPECT_EQ(c.info.tokenizer, "byte");
  EXPECT_EQ(c.info.eot_token, 256);
  EXPECT_GE(c.split(Split::Train).size(), 5000u);
  EXPECT_EQ(c.split(Split::Train)[c.split(Split::Train).size() - 1], 256);
  const auto docs = document_spans(c.split(Split::Train), 256);
  EXPECT_EQ(static_cast<std::int64_t>(docs.size()), c.info.docs[0]);
  // The model's vocabulary must hold the corpus's.
  std::string e = error_of([&] { load_corpus(corpus_path(dir.path(), "news"), 100); });
  EXPECT_NE(e.find("news.h5"), std::string::npos) << e;
  EXPECT_NE(e.find("model.vocab_size"), std::string::npos) << e;

  // One byte of /train changed outside HDF5: its CRC-32 catches it.
  const fs::path file = corpus_path(dir.path(), "news");
  std::uint64_t at = 0;
  {
    h5::Handle f = h5::open_file(file, false);
    h5::Handle set(H5Dopen2(f, "train", H5P_DEFAULT));
    at = H5Dget_offset(set) + 100;
  }
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(at));
    f.put('\x01');
  }
  e = error_of([&] { load_corpus(file, 257); });
  EXPECT_NE(e.find("/train does not match its CRC-32"), std::string::npos) << e;
}

TEST(Metrics, AppendFlushAndResumeDropsRowsAfterTheCheckpoint) {
  btm::test::TempDir dir;
  MetricsLog log(dir / "m.h5", "legal", "cfg");
  for (int s = 1; s <= 5; ++s) log.append({s * 10, s * 1000, 5.0 - s, 1e-3, 0.5, 1000.0, s * 1.0});
  log.flush();
  const auto rows = MetricsLog::read(dir / "m.h5");
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows[2].step, 30);
  EXPECT_DOUBLE_EQ(rows[2].loss, 2.0);
  MetricsLog resumed(dir / "m.h5", "legal", "cfg");
  resumed.resume(30);
  ASSERT_EQ(resumed.rows().size(), 3u);
  EXPECT_EQ(resumed.rows().back().step, 30);
}

// Format 2: every dataset says its units; the validation table holds the loss per domain and
// its perplexity exp(loss); a resume keeps the validations through the checkpoint's step.
TEST(Metrics, DatasetsHaveUnitsAndTheValidationTableRoundTrips) {
  btm::test::TempDir dir;
  MetricsLog log(dir / "m.h5", "seed", "cfg");
  log.set_validation_domains({"a", "b"}, {128, 64});
  for (int s = 1; s <= 4; ++s) {
    log.append({s, s * 100, 4.0, 1e-3, 0.5, 1000.0, s * 1.0, 12.5, 0.25, 1 << 20});
    log.append_validation({s, s * 100, {std::log(50.0) - 0.1 * s, std::log(80.0)}});
  }
  EXPECT_THROW(log.append_validation({5, 500, {1.0}}), std::invalid_argument);
  log.flush();
  {
    h5::Handle f = h5::open_file(dir / "m.h5", false);
    EXPECT_EQ(h5::get_int(f, "format_version"), 2);
    const std::pair<const char*, const char*> units[] = {{"step", "steps"},
                                                         {"tokens", "tokens"},
                                                         {"loss", "nats/token"},
                                                         {"lr", "1"},
                                                         {"grad_norm", "1"},
                                                         {"tokens_per_s", "tokens/s"},
                                                         {"step_ms", "ms"},
                                                         {"mfu", "1"},
                                                         {"memory_bytes", "bytes"},
                                                         {"elapsed_s", "s"},
                                                         {"valid/step", "steps"},
                                                         {"valid/tokens", "tokens"},
                                                         {"valid/loss", "nats/token"},
                                                         {"valid/perplexity", "1"},
                                                         {"valid/tokens_scored", "tokens"}};
    for (const auto& [name, unit] : units) EXPECT_EQ(h5::units_of(f, name), unit) << name;
    h5::Handle g = h5::open_group(f, "valid");
    EXPECT_EQ(h5::get_strings(g, "domains"), (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(h5::shape(g, "perplexity"), (std::vector<std::size_t>{4, 2}));
    const auto ppl = h5::read_array<double>(g, "perplexity");
    EXPECT_NEAR(ppl[2 * 2 + 0], 50.0 * std::exp(-0.3), 1e-9);
    EXPECT_NEAR(ppl[2 * 2 + 1], 80.0, 1e-9);
  }
  const MetricsLog back = MetricsLog::load(dir / "m.h5");
  ASSERT_EQ(back.validation().size(), 4u);
  EXPECT_EQ(back.validation_tokens(), (std::vector<std::int64_t>{128, 64}));
  EXPECT_DOUBLE_EQ(back.validation()[3].loss[0], std::log(50.0) - 0.4);
  EXPECT_EQ(back.rows()[1].step_ms, 12.5);
  EXPECT_EQ(back.rows()[1].memory_bytes, 1 << 20);
  MetricsLog resumed(dir / "m.h5", "seed", "cfg");
  resumed.set_validation_domains({"a", "b"}, {128, 64});
  resumed.resume(2);
  ASSERT_EQ(resumed.validation().size(), 2u);
  EXPECT_EQ(resumed.validation().back().step, 2);
  EXPECT_EQ(resumed.rows().size(), 2u);
}

TEST(Forest, ManifestRoundTripAndCorruptManifestIsRefused) {
  btm::test::TempDir dir;
  EXPECT_TRUE(load_forest(dir.path()).models.empty());
  Forest f;
  f.config_ini = "cfg";
  f.upsert({"seed",
            ModelKind::seed,
            {"a", "b"},
            {},
            {},
            ModelStatus::trained,
            10,
            64,
            1000,
            2e9,
            "elms/seed.h5",
            ""});
  f.upsert({"a",
            ModelKind::elm,
            {"a"},
            {"seed"},
            {1.0},
            ModelStatus::branched,
            10,
            32,
            1000,
            2e9,
            "elms/a.h5",
            "seed.h5"});
  f.upsert({"c",
            ModelKind::elm,
            {"c"},
            {"a", "seed"},
            {0.25, 0.75},
            ModelStatus::trained,
            20,
            32,
            3000,
            6e9,
            "elms/c.h5",
            ""});
  f.timing = {{"seed", 2.5, 2.0}, {"elms", 4.0, 3.5}};
  save_forest(dir.path(), f);
  const Forest g = load_forest(dir.path());
  ASSERT_EQ(g.models.size(), 3u);
  EXPECT_EQ(g.models[2].parents, (std::vector<std::string>{"a", "seed"}));
  EXPECT_EQ(g.models[1].state_from, "seed.h5");
  EXPECT_EQ(g.models[0].state_from, "");
  ASSERT_EQ(g.timing.size(), 2u);
  EXPECT_EQ(g.timing[1].phase, "elms");
  EXPECT_EQ(g.timing[1].wall_s, 4.0);
  EXPECT_EQ(g.timing[1].train_s, 3.5);
  EXPECT_EQ(g.models[2].parent_weights, (std::vector<double>{0.25, 0.75}));
  EXPECT_EQ(g.elms().size(), 2u);
  EXPECT_EQ(g.find("a")->status, ModelStatus::branched);
  EXPECT_EQ(g.find("seed")->global_batch, 64);
  EXPECT_EQ(g.find("c")->tokens, 3000);
  EXPECT_DOUBLE_EQ(g.find("c")->flops, 6e9);
  fs::resize_file(forest_file(dir.path()), 100);
  const std::string e = error_of([&] { load_forest(dir.path()); });
  EXPECT_NE(e.find("forest.h5"), std::string::npos) << e;
}

// One writer per run directory: a second one is refused naming the holder, the lock goes with
// its holder, and the holder removes the temporary files an interrupted write left behind.
TEST(RunLock, OneWriterPerRunDirectory) {
  btm::test::TempDir dir;
  const fs::path run = dir / "run";
  fs::create_directories(run / "elms");
  { std::ofstream(run / "elms" / "d0.h5.tmp.4242") << "half a checkpoint"; }
  { std::ofstream(run / "elms" / "keep.h5") << "not a temporary"; }
  btm::test::write_synthetic_corpus(dir / "c", "a", 1, 2000);
  {
    RunLock lock(run, "test");
    EXPECT_EQ(lock.removed(), std::vector<fs::path>{run / "elms" / "d0.h5.tmp.4242"});
    EXPECT_FALSE(fs::exists(run / "elms" / "d0.h5.tmp.4242"));
    EXPECT_TRUE(fs::exists(run / "elms" / "keep.h5"));
    // Another process (btm itself) is refused while this one holds the lock.
    const auto r = btm::test::run_btm("eval --run.dir " + run.string() +
                                      " --data.domains a --data.corpus " + (dir / "c").string());
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("is in use by another btm (host "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("pid " + std::to_string(::getpid())), std::string::npos) << r.output;
  }
  // Released: the next writer gets it.
  EXPECT_NO_THROW(RunLock(run, "test"));
}

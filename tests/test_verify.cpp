// btm verify on a real (tiny) run directory: every file sound, then one byte of one checkpoint
// changed as a disk would change it: that file, and only it, is reported damaged (exit 2).
#include <gtest/gtest.h>

#include <fstream>

#include "btm/io/h5.hpp"
#include "test_util.hpp"

namespace btm {
namespace {

namespace fs = std::filesystem;

TEST(Verify, ReportsTheDamagedFileAndOnlyIt) {
  test::TempDir dir("btm-verify");
  test::write_synthetic_corpus(dir / "corpus", "a", 1, 3000);
  test::write_synthetic_corpus(dir / "corpus", "b", 2, 3000);
  const std::string run = (dir / "run").string();
  const auto trained = test::run_btm(
      "run --data.corpus " + (dir / "corpus").string() + " --data.domains a,b --run.dir " + run +
      " --model.n_layer 1 --model.d_model 16 --model.n_head 2 --model.context 8 --run.steps 4 "
      "--run.threads 1 --run.device cpu --eval.blocks 2 --eval.prior_blocks 2 --eval.prior_batch "
      "1");
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  auto r = test::run_btm("verify " + run);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("ok       " + run + "/elms/a.h5 (checkpoint, step 4 of 4)"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("ok       " + run + "/eval.h5 (evaluation"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find(" 0 damaged"), std::string::npos) << r.output;

  // One byte inside the first chunk of /params of elms/a.h5.
  const fs::path file = dir / "run" / "elms" / "a.h5";
  std::uint64_t at = 0;
  {
    h5::Handle f = h5::open_file(file, false);
    h5::Handle set(H5Dopen2(f, "params", H5P_DEFAULT));
    h5::Handle space(H5Dget_space(set));
    hsize_t offset[1] = {0}, size = 0;
    haddr_t address = 0;
    unsigned mask = 0;
    ASSERT_GE(H5Dget_chunk_info(set, space, 0, offset, &mask, &address, &size), 0);
    at = address + 7;
  }
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(at));
    char c = 0;
    f.read(&c, 1);
    f.seekp(static_cast<std::streamoff>(at));
    f.put(static_cast<char>(c ^ 0x01));
  }
  r = test::run_btm("verify " + run);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("DAMAGED  " + file.string() + ": "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("/params"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ok       " + run + "/elms/b.h5"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" 1 damaged"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace btm

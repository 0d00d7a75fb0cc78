// load_checkpoint_in_group under MPI (4 ranks): rank 0 of a group reads, every rank of the group
// gets the same checkpoint; a bad file is an InputError on every rank, naming it.
#include <gtest/gtest.h>

#include "btm/io/checkpoint.hpp"
#include "btm/model/params.hpp"
#include "btm/util/error.hpp"
#include "mpi_test_util.hpp"

using namespace btm;

TEST(CheckpointInGroup, RankZeroReadsAndTheGroupReceivesIt) {
  MpiComm& world = btm::test::world();
  btm::test::SharedDir dir(world);
  Checkpoint c;
  c.name = "d0";
  c.model = btm::test::small_model();
  const std::size_t n = ParamLayout(c.model).total();
  c.params.resize(n);
  init_gpt2(ParamLayout(c.model), c.params, 5);
  c.adam_m.assign(n, 0.5f);
  c.adam_v.assign(n, 0.25f);
  c.step = 3;
  c.target_steps = c.schedule_steps = 9;
  c.batch = {2, 4};
  c.sampler_seed = 77;
  c.tokens = 123;
  c.domains = {"d0"};
  c.config_ini = "[run]\nsteps = 9\n";
  if (world.rank() == 0) save_checkpoint(dir / "c.h5", c);
  world.barrier();
  const std::unique_ptr<MpiComm> pair = world.split(world.rank() / 2, world.rank());
  const Checkpoint got = load_checkpoint_in_group(*pair, dir / "c.h5", &c.model);
  EXPECT_EQ(got.name, "d0");
  EXPECT_EQ(got.model, c.model);
  EXPECT_EQ(got.step, 3);
  EXPECT_EQ(got.batch, (GlobalBatch{2, 4}));
  EXPECT_EQ(got.sampler_seed, 77u);
  EXPECT_EQ(got.domains, c.domains);
  EXPECT_EQ(got.config_ini, c.config_ini);
  EXPECT_EQ(got.params, c.params);
  EXPECT_EQ(got.adam_m, c.adam_m);
  EXPECT_EQ(got.adam_v, c.adam_v);
  try {
    load_checkpoint_in_group(*pair, dir / "missing.h5");
    ADD_FAILURE() << "a missing checkpoint was loaded";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("missing.h5"), std::string::npos) << e.what();
  }
  world.barrier();
}

// The communicator's collective helpers under MPI (4 ranks): error agreement and the byte count.
#include <gtest/gtest.h>

#include <stdexcept>

#include "btm/dist/comm.hpp"
#include "btm/util/error.hpp"
#include "mpi_test_util.hpp"

using namespace btm;

// A failure on any rank reaches every rank as the lowest failing rank's error: an InputError as
// InputError (an empty message too), any other exception as SystemError.
TEST(CollectiveCheck, EveryRankThrowsTheLowestFailingRanksError) {
  MpiComm& world = btm::test::world();
  EXPECT_NO_THROW(collective_check(world, [] {}));
  try {
    collective_check(world, [&] {
      if (world.rank() == 2) throw std::runtime_error("rank 2 ran out of something");
      if (world.rank() == 3) throw InputError("rank 3's input");
    });
    ADD_FAILURE() << "no error on rank " << world.rank();
  } catch (const SystemError& e) {
    EXPECT_EQ(std::string(e.what()), "rank 2 ran out of something");
  }
  EXPECT_THROW(collective_check(world,
                                [&] {
                                  if (world.rank() == 1) throw InputError("");
                                }),
               InputError);
}

TEST(MpiComm, GatherAndBroadcastCountTheirBytes) {
  MpiComm& world = btm::test::world();
  const std::uint64_t before = world.bytes_sent();
  std::vector<char> mine(static_cast<std::size_t>(world.rank()) + 1, 'a');
  const auto all = world.gather_to_root(mine);
  if (world.rank() == 0) {
    ASSERT_EQ(all.size(), static_cast<std::size_t>(world.size()));
    for (int r = 0; r < world.size(); ++r)
      EXPECT_EQ(all[static_cast<std::size_t>(r)].size(), static_cast<std::size_t>(r) + 1);
  }
  std::vector<double> v = world.rank() == 0 ? std::vector<double>{1.5, 2.5} : std::vector<double>{};
  world.broadcast_vector(v, 0);
  EXPECT_EQ(v, (std::vector<double>{1.5, 2.5}));
  EXPECT_GT(world.bytes_sent(), before);
}

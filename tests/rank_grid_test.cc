// RankGrid (pure rank math, no MPI) and the single-process LocalProcessGroup.
#include "parallel/rank_grid.h"

#include <gtest/gtest.h>

#include <numeric>
#include <tuple>
#include <vector>

#include "core/check.h"
#include "parallel/local_process_group.h"
#include "parallel/parallel_groups.h"

namespace tessera {
namespace {

// The layout spelled out: world_rank = tp_rank + tp * (dp_rank + dp * pp_rank).
int expected_rank(int tp, int dp, int tp_rank, int pp_rank, int dp_rank) {
  return tp_rank + tp * (dp_rank + dp * pp_rank);
}

class RankGridLayout : public ::testing::TestWithParam<std::tuple<int, int, int>> {};

TEST_P(RankGridLayout, CoordinatesFollowTpThenDpThenPp) {
  const auto [tp, pp, dp] = GetParam();
  const RankGrid grid(tp, pp, dp);
  EXPECT_EQ(grid.world_size(), tp * pp * dp);
  for (int p = 0; p < pp; ++p) {
    for (int d = 0; d < dp; ++d) {
      for (int t = 0; t < tp; ++t) {
        const int rank = expected_rank(tp, dp, t, p, d);
        const GridCoord c = grid.coord(rank);
        EXPECT_EQ(c.tp, t);
        EXPECT_EQ(c.pp, p);
        EXPECT_EQ(c.dp, d);
        EXPECT_EQ(grid.rank(GridCoord{t, p, d}), rank);
      }
    }
  }
}

TEST_P(RankGridLayout, RankCoordRoundTrip) {
  const auto [tp, pp, dp] = GetParam();
  const RankGrid grid(tp, pp, dp);
  for (int rank = 0; rank < grid.world_size(); ++rank) EXPECT_EQ(grid.rank(grid.coord(rank)), rank);
}

TEST_P(RankGridLayout, GroupsVaryOnlyTheirOwnAxis) {
  const auto [tp, pp, dp] = GetParam();
  const RankGrid grid(tp, pp, dp);
  for (int rank = 0; rank < grid.world_size(); ++rank) {
    SCOPED_TRACE(::testing::Message() << "rank " << rank);
    const GridCoord c = grid.coord(rank);
    std::vector<int> tp_members, pp_members, dp_members;
    for (int t = 0; t < tp; ++t) tp_members.push_back(expected_rank(tp, dp, t, c.pp, c.dp));
    for (int p = 0; p < pp; ++p) pp_members.push_back(expected_rank(tp, dp, c.tp, p, c.dp));
    for (int d = 0; d < dp; ++d) dp_members.push_back(expected_rank(tp, dp, c.tp, c.pp, d));
    EXPECT_EQ(grid.tp_group(rank), tp_members);
    EXPECT_EQ(grid.pp_group(rank), pp_members);
    EXPECT_EQ(grid.dp_group(rank), dp_members);
    // A rank sits in each of its groups at its own coordinate.
    EXPECT_EQ(grid.tp_group(rank)[static_cast<size_t>(c.tp)], rank);
    EXPECT_EQ(grid.pp_group(rank)[static_cast<size_t>(c.pp)], rank);
    EXPECT_EQ(grid.dp_group(rank)[static_cast<size_t>(c.dp)], rank);
  }
}

TEST_P(RankGridLayout, GroupsOfEachAxisPartitionTheWorld) {
  const auto [tp, pp, dp] = GetParam();
  const RankGrid grid(tp, pp, dp);
  for (auto group_of : {&RankGrid::tp_group, &RankGrid::pp_group, &RankGrid::dp_group}) {
    std::vector<int> times_seen(static_cast<size_t>(grid.world_size()), 0);
    for (int rank = 0; rank < grid.world_size(); ++rank) {
      const std::vector<int> members = (grid.*group_of)(rank);
      // Every member of rank's group has the same group: counting each group once from its first member.
      for (int member : members) EXPECT_EQ((grid.*group_of)(member), members);
      if (members.front() == rank) {
        for (int member : members) ++times_seen[static_cast<size_t>(member)];
      }
    }
    for (int seen : times_seen) EXPECT_EQ(seen, 1);
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, RankGridLayout,
                         ::testing::Values(std::make_tuple(2, 2, 2), std::make_tuple(4, 1, 1), std::make_tuple(1, 4, 1),
                                           std::make_tuple(1, 1, 4), std::make_tuple(2, 1, 3)),
                         [](const auto& info) {
                           return "tp" + std::to_string(std::get<0>(info.param)) + "_pp" +
                                  std::to_string(std::get<1>(info.param)) + "_dp" +
                                  std::to_string(std::get<2>(info.param));
                         });

TEST(RankGrid, ConcreteLayout222) {
  const RankGrid grid(2, 2, 2);
  EXPECT_EQ(grid.to_string(), "tp=2 pp=2 dp=2");
  // Rank 5 = tp 1 + 2 * (dp 0 + 2 * pp 1).
  const GridCoord c = grid.coord(5);
  EXPECT_EQ(c.tp, 1);
  EXPECT_EQ(c.dp, 0);
  EXPECT_EQ(c.pp, 1);
  EXPECT_EQ(grid.tp_group(5), (std::vector<int>{4, 5}));
  EXPECT_EQ(grid.dp_group(5), (std::vector<int>{5, 7}));
  EXPECT_EQ(grid.pp_group(5), (std::vector<int>{1, 5}));
}

TEST(RankGrid, BadSizesThrowConfigError) {
  EXPECT_THROW(RankGrid(0, 1, 1), ConfigError);
  EXPECT_THROW(RankGrid(1, 0, 1), ConfigError);
  EXPECT_THROW(RankGrid(1, 1, 0), ConfigError);
  EXPECT_THROW(RankGrid(-2, 1, 1), ConfigError);
  try {
    RankGrid(2, -1, 1);
    FAIL() << "no exception";
  } catch (const ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find("pp=-1"), std::string::npos) << error.what();
  }
}

TEST(RankGrid, RanksOutsideTheGridAreInternalErrors) {
  const RankGrid grid(2, 1, 2);
  EXPECT_THROW(grid.coord(4), InternalError);
  EXPECT_THROW(grid.coord(-1), InternalError);
  EXPECT_THROW(grid.rank(GridCoord{2, 0, 0}), InternalError);
}

// ---- LocalProcessGroup ------------------------------------------------------------------------------------

TEST(LocalProcessGroup, MakeLocalGroupsNamesFourGroupsOfOne) {
  ParallelGroups groups = make_local_groups();
  const std::pair<ProcessGroup*, const char*> expected[] = {
      {groups.world.get(), "world"}, {groups.tp.get(), "tp"}, {groups.pp.get(), "pp"}, {groups.dp.get(), "dp"}};
  for (const auto& [group, name] : expected) {
    ASSERT_NE(group, nullptr);
    EXPECT_EQ(group->name(), name);
    EXPECT_EQ(group->rank(), 0);
    EXPECT_EQ(group->size(), 1);
    EXPECT_EQ(group->world_ranks(), std::vector<int>{0});
  }
}

TEST(LocalProcessGroup, ReductionsAndBroadcastLeaveTheTensor) {
  LocalProcessGroup group("tp");
  std::vector<float> x = {1.5f, -2.0f, 3.0f};
  std::vector<int32_t> n = {7, -8};
  Tensor xt(x.data(), DType::kF32, Device::kCpu, {3});
  Tensor nt(n.data(), DType::kI32, Device::kCpu, {2});
  WorkHandle w1 = group.all_reduce(xt, ReduceOp::kSum);
  WorkHandle w2 = group.all_reduce(nt, ReduceOp::kMax);
  WorkHandle w3 = group.broadcast(xt, 0);
  EXPECT_TRUE(w1->test());
  EXPECT_TRUE(w3->test());
  w3->wait();
  w2->wait();
  w1->wait();
  group.barrier();
  EXPECT_EQ(x, (std::vector<float>{1.5f, -2.0f, 3.0f}));
  EXPECT_EQ(n, (std::vector<int32_t>{7, -8}));
}

TEST(LocalProcessGroup, GatherAndScatterCopy) {
  LocalProcessGroup group("dp");
  std::vector<int32_t> in = {1, 2, 3, 4, 5};
  std::vector<int32_t> out(5, -1);
  Tensor in_t(in.data(), DType::kI32, Device::kCpu, {5});
  Tensor out_t(out.data(), DType::kI32, Device::kCpu, {5});
  group.all_gather(out_t, in_t)->wait();
  EXPECT_EQ(out, in);
  std::fill(out.begin(), out.end(), -1);
  group.reduce_scatter(out_t, in_t, ReduceOp::kSum)->wait();
  EXPECT_EQ(out, in);
  // In place is allowed.
  group.all_gather(in_t, in_t)->wait();
  EXPECT_EQ(in, (std::vector<int32_t>{1, 2, 3, 4, 5}));
}

TEST(LocalProcessGroup, SendAndRecvThrowCommError) {
  LocalProcessGroup group("pp");
  std::vector<float> x(4, 0.0f);
  Tensor t(x.data(), DType::kF32, Device::kCpu, {4});
  EXPECT_THROW(group.send(t, 0, 1), CommError);
  try {
    group.recv(t, 0, 3);
    FAIL() << "no exception";
  } catch (const CommError& error) {
    EXPECT_NE(std::string(error.what()).find("group 'pp'"), std::string::npos) << error.what();
  }
}

TEST(LocalProcessGroup, BadArgumentsAreInternalErrors) {
  LocalProcessGroup group("tp");
  std::vector<float> x(6, 0.0f);
  std::vector<uint16_t> half(4, 0);
  Tensor six(x.data(), DType::kF32, Device::kCpu, {6});
  Tensor three(x.data(), DType::kF32, Device::kCpu, {3});
  Tensor bf16(half.data(), DType::kBF16, Device::kCpu, {4});
  EXPECT_NO_THROW(group.all_reduce(bf16, ReduceOp::kSum)->wait());  // bf16 is a communication dtype
  EXPECT_THROW(group.all_gather(six, three), InternalError);
  EXPECT_THROW(group.reduce_scatter(three, six, ReduceOp::kSum), InternalError);
  EXPECT_THROW(group.broadcast(six, 1), InternalError);
}

}  // namespace
}  // namespace tessera

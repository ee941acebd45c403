// MpiProcessGroup and make_mpi_groups on 4 ranks: closed-form results of every operation on the world and on
// the tp/pp/dp groups of two grids, in f32 and i32; operations started together and waited in reverse; and
// timeouts, which must name the operation, the group, its ranks and (for send/recv) the peer.
#include "parallel/process_group.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/bf16.h"
#include "core/check.h"
#include "core/tensor.h"
#include "parallel/mpi_process_group.h"
#include "parallel/parallel_groups.h"
#include "parallel/rank_grid.h"
#include "tests/mpi_test_util.h"

namespace tessera {
namespace {

// Generous: the ranks share two cores with each other and with whatever else the machine runs.
constexpr double kTimeoutS = 30.0;
// For the timeout tests: how long a rank waits for a peer that is deliberately late.
constexpr double kShortTimeoutS = 1.0;

using tessera::mpi_test::world_rank;
using tessera::mpi_test::world_size;

template <typename T>
DType dtype_of();
template <>
DType dtype_of<float>() {
  return DType::kF32;
}
template <>
DType dtype_of<int32_t>() {
  return DType::kI32;
}

template <typename T>
Tensor tensor_of(std::vector<T>& values) {
  return Tensor(values.data(), dtype_of<T>(), Device::kCpu, {static_cast<int64_t>(values.size())});
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// An odd element count, so no chunking happens to line up with a power of two.
constexpr int kCount = 37;

template <typename T>
void check_all_reduce(ProcessGroup& group) {
  const int n = group.size();
  const int r = group.rank();
  std::vector<T> x(kCount);
  for (int i = 0; i < kCount; ++i) x[i] = static_cast<T>((r + 1) * (i % 5 + 1));
  group.all_reduce(tensor_of(x), ReduceOp::kSum)->wait();
  for (int i = 0; i < kCount; ++i) ASSERT_EQ(x[i], static_cast<T>(n * (n + 1) / 2 * (i % 5 + 1))) << "i=" << i;

  // Max over ranks of +(r+1) is n, of -(r+1) is -1.
  for (int i = 0; i < kCount; ++i) x[i] = static_cast<T>(i % 2 == 0 ? r + 1 : -(r + 1));
  group.all_reduce(tensor_of(x), ReduceOp::kMax)->wait();
  for (int i = 0; i < kCount; ++i) ASSERT_EQ(x[i], static_cast<T>(i % 2 == 0 ? n : -1)) << "i=" << i;
}

template <typename T>
void check_reduce_scatter(ProcessGroup& group) {
  const int n = group.size();
  const int r = group.rank();
  constexpr int kChunk = 5;
  // Chunk k, element j on rank r holds (r+1)(k+1) + j; rank r receives chunk r.
  std::vector<T> in(static_cast<size_t>(kChunk * n));
  for (int k = 0; k < n; ++k) {
    for (int j = 0; j < kChunk; ++j) in[k * kChunk + j] = static_cast<T>((r + 1) * (k + 1) + j);
  }
  std::vector<T> out(kChunk, static_cast<T>(-99));
  group.reduce_scatter(tensor_of(out), tensor_of(in), ReduceOp::kSum)->wait();
  for (int j = 0; j < kChunk; ++j) ASSERT_EQ(out[j], static_cast<T>(n * (n + 1) / 2 * (r + 1) + n * j)) << "j=" << j;

  std::fill(out.begin(), out.end(), static_cast<T>(-99));
  group.reduce_scatter(tensor_of(out), tensor_of(in), ReduceOp::kMax)->wait();
  for (int j = 0; j < kChunk; ++j) ASSERT_EQ(out[j], static_cast<T>(n * (r + 1) + j)) << "j=" << j;
}

template <typename T>
void check_all_gather(ProcessGroup& group) {
  const int n = group.size();
  const int r = group.rank();
  constexpr int kChunk = 3;
  std::vector<T> in(kChunk);
  for (int j = 0; j < kChunk; ++j) in[j] = static_cast<T>(100 * r + j);
  std::vector<T> out(static_cast<size_t>(kChunk * n), static_cast<T>(-1));
  group.all_gather(tensor_of(out), tensor_of(in))->wait();
  for (int k = 0; k < n; ++k) {
    for (int j = 0; j < kChunk; ++j) ASSERT_EQ(out[k * kChunk + j], static_cast<T>(100 * k + j)) << k << "," << j;
  }
}

template <typename T>
void check_broadcast(ProcessGroup& group) {
  for (int root = 0; root < group.size(); ++root) {
    std::vector<T> x(kCount);
    for (int j = 0; j < kCount; ++j) x[j] = static_cast<T>(group.rank() == root ? 1000 * root + j : -1);
    group.broadcast(tensor_of(x), root)->wait();
    for (int j = 0; j < kCount; ++j) ASSERT_EQ(x[j], static_cast<T>(1000 * root + j)) << "root " << root;
  }
}

// Each rank sends two messages to the next rank around the ring, tags 10 and 11, and receives them from the
// previous one with the receives posted in the other order: tags, not order, must match them. In a group of
// one, the rank sends to itself.
template <typename T>
void check_ring_send_recv(ProcessGroup& group) {
  const int n = group.size();
  const int r = group.rank();
  const int next = (r + 1) % n;
  const int prev = (r + n - 1) % n;
  std::vector<T> out_a(kCount), out_b(kCount);
  for (int j = 0; j < kCount; ++j) {
    out_a[j] = static_cast<T>(100 * r + j);
    out_b[j] = static_cast<T>(-(100 * r + j));
  }
  std::vector<T> in_a(kCount, static_cast<T>(7)), in_b(kCount, static_cast<T>(7));
  WorkHandle recv_b = group.recv(tensor_of(in_b), prev, 11);
  WorkHandle recv_a = group.recv(tensor_of(in_a), prev, 10);
  WorkHandle send_a = group.send(tensor_of(out_a), next, 10);
  WorkHandle send_b = group.send(tensor_of(out_b), next, 11);
  recv_a->wait();
  recv_b->wait();
  send_a->wait();
  send_b->wait();
  for (int j = 0; j < kCount; ++j) {
    ASSERT_EQ(in_a[j], static_cast<T>(100 * prev + j)) << "j=" << j;
    ASSERT_EQ(in_b[j], static_cast<T>(-(100 * prev + j))) << "j=" << j;
  }
}

template <typename T>
void check_every_operation(ProcessGroup& group) {
  SCOPED_TRACE(dtype_name(dtype_of<T>()));
  check_all_reduce<T>(group);
  check_reduce_scatter<T>(group);
  check_all_gather<T>(group);
  check_broadcast<T>(group);
  check_ring_send_recv<T>(group);
  group.barrier();
}

// Builds the grid's groups, checks their membership against RankGrid, and runs every operation on each.
void check_grid(const RankGrid& grid) {
  const int rank = world_rank();
  ParallelGroups groups = make_mpi_groups(grid, rank, kTimeoutS);
  const GridCoord coord = grid.coord(rank);

  std::vector<int> everyone(static_cast<size_t>(grid.world_size()));
  for (int r = 0; r < grid.world_size(); ++r) everyone[r] = r;
  EXPECT_EQ(groups.world->name(), "world");
  EXPECT_EQ(groups.world->rank(), rank);
  EXPECT_EQ(groups.world->world_ranks(), everyone);
  EXPECT_EQ(groups.tp->name(), "tp");
  EXPECT_EQ(groups.tp->rank(), coord.tp);
  EXPECT_EQ(groups.tp->world_ranks(), grid.tp_group(rank));
  EXPECT_EQ(groups.pp->name(), "pp");
  EXPECT_EQ(groups.pp->rank(), coord.pp);
  EXPECT_EQ(groups.pp->world_ranks(), grid.pp_group(rank));
  EXPECT_EQ(groups.dp->name(), "dp");
  EXPECT_EQ(groups.dp->rank(), coord.dp);
  EXPECT_EQ(groups.dp->world_ranks(), grid.dp_group(rank));

  for (ProcessGroup* group : {groups.world.get(), groups.tp.get(), groups.pp.get(), groups.dp.get()}) {
    SCOPED_TRACE("group " + group->name());
    check_every_operation<float>(*group);
    check_every_operation<int32_t>(*group);
  }
}

TEST(MpiProcessGroup, EveryOperationOnGrid_tp2_pp1_dp2) {
  if (world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  check_grid(RankGrid(2, 1, 2));
}

TEST(MpiProcessGroup, EveryOperationOnGrid_tp1_pp2_dp2) {
  if (world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  check_grid(RankGrid(1, 2, 2));
}

TEST(MpiProcessGroup, GridOfTheWrongSizeIsAConfigError) {
  EXPECT_THROW(make_mpi_groups(RankGrid(2, 2, world_size()), world_rank(), kTimeoutS), ConfigError);
}

TEST(MpiProcessGroup, OperationsStartedTogetherCompleteWhenWaitedInReverse) {
  if (world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  const RankGrid grid(2, 1, 2);
  ParallelGroups groups = make_mpi_groups(grid, world_rank(), kTimeoutS);
  ProcessGroup& world = *groups.world;
  const int n = world.size();
  const int r = world.rank();

  std::vector<float> sum(kCount, static_cast<float>(r + 1));
  std::vector<int32_t> gathered(static_cast<size_t>(n), -1);
  std::vector<int32_t> mine = {10 * r};
  std::vector<float> broadcast(kCount, r == n - 1 ? 42.0f : 0.0f);
  std::vector<int32_t> tp_max = {r};
  std::vector<float> dp_sum = {1.0f};
  std::vector<int32_t> received(3, -1);
  std::vector<int32_t> sent = {r, r, r};

  std::vector<WorkHandle> work;
  work.push_back(world.all_reduce(tensor_of(sum), ReduceOp::kSum));
  work.push_back(world.all_gather(tensor_of(gathered), tensor_of(mine)));
  work.push_back(world.broadcast(tensor_of(broadcast), n - 1));
  work.push_back(groups.tp->all_reduce(tensor_of(tp_max), ReduceOp::kMax));
  work.push_back(groups.dp->all_reduce(tensor_of(dp_sum), ReduceOp::kSum));
  work.push_back(world.recv(tensor_of(received), (r + n - 1) % n, 5));
  work.push_back(world.send(tensor_of(sent), (r + 1) % n, 5));
  for (auto it = work.rbegin(); it != work.rend(); ++it) (*it)->wait();
  for (WorkHandle& w : work) EXPECT_TRUE(w->test());

  for (float v : sum) EXPECT_EQ(v, n * (n + 1) / 2);
  for (int k = 0; k < n; ++k) EXPECT_EQ(gathered[k], 10 * k);
  for (float v : broadcast) EXPECT_EQ(v, 42.0f);
  EXPECT_EQ(tp_max[0], grid.tp_group(r).back());
  EXPECT_EQ(dp_sum[0], 2.0f);
  EXPECT_EQ(received, std::vector<int32_t>(3, (r + n - 1) % n));
}

TEST(MpiProcessGroup, TestPollsWithoutBlockingAndDestructorWaits) {
  ParallelGroups groups = make_mpi_groups(RankGrid(1, 1, world_size()), world_rank(), kTimeoutS);
  ProcessGroup& world = *groups.world;
  const int n = world.size();

  std::vector<int32_t> x(kCount, 1);
  WorkHandle work = world.all_reduce(tensor_of(x), ReduceOp::kSum);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!work->test()) ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "test() never became true";
  work->wait();  // a second completion check is harmless
  for (int32_t v : x) EXPECT_EQ(v, n);

  // Dropping a Work without wait() still completes it before the handle is gone.
  std::vector<int32_t> y(kCount, 2);
  { WorkHandle dropped = world.all_reduce(tensor_of(y), ReduceOp::kSum); }
  for (int32_t v : y) EXPECT_EQ(v, 2 * n);
}

// bf16 travels as 16-bit words and reduces in f32 with one rounding to nearest even per combining step. Small
// integers are exact in bf16, so sums and maxima have closed forms; 1 + 2^-8 (not a bf16 value once summed
// with 1) checks that results are rounded, not truncated or kept in f32.
TEST(MpiProcessGroup, Bf16AllReduceSumsAndMaxesInF32AndRounds) {
  ParallelGroups groups = make_mpi_groups(RankGrid(1, 1, world_size()), world_rank(), kTimeoutS);
  ProcessGroup& world = *groups.world;
  const int n = world.size(), r = world.rank();
  std::vector<uint16_t> x(kCount);
  Tensor t(x.data(), DType::kBF16, Device::kCpu, {kCount});
  for (int i = 0; i < kCount; ++i) x[i] = f32_to_bf16(static_cast<float>((r + 1) * (i % 5 + 1)));
  world.all_reduce(t, ReduceOp::kSum)->wait();
  for (int i = 0; i < kCount; ++i) ASSERT_EQ(bf16_to_f32(x[i]), static_cast<float>(n * (n + 1) / 2 * (i % 5 + 1)));
  for (int i = 0; i < kCount; ++i) x[i] = f32_to_bf16(static_cast<float>(i % 2 == 0 ? r + 1 : -(r + 1)));
  world.all_reduce(t, ReduceOp::kMax)->wait();
  for (int i = 0; i < kCount; ++i) ASSERT_EQ(bf16_to_f32(x[i]), static_cast<float>(i % 2 == 0 ? n : -1));
  // 256 + 1 on rank 0 and 0 elsewhere: 257 is not a bf16 value (8 significant bits), the sum rounds to 256.
  for (int i = 0; i < kCount; ++i) x[i] = f32_to_bf16(r == 0 ? 256.0f : (r == 1 ? 1.0f : 0.0f));
  world.all_reduce(t, ReduceOp::kSum)->wait();
  for (int i = 0; i < kCount; ++i) ASSERT_EQ(bf16_to_f32(x[i]), 256.0f);
  // Point to point: bits unchanged.
  if (n >= 2 && r < 2) {
    for (int i = 0; i < kCount; ++i) x[i] = static_cast<uint16_t>(r == 0 ? 0x3f81 + i : 0);
    if (r == 0) world.send(t, 1, 7)->wait();
    if (r == 1) {
      world.recv(t, 0, 7)->wait();
      for (int i = 0; i < kCount; ++i) ASSERT_EQ(x[i], 0x3f81 + i);
    }
  }
}

TEST(MpiProcessGroup, BadArgumentsAreInternalErrors) {
  ParallelGroups groups = make_mpi_groups(RankGrid(1, 1, world_size()), world_rank(), kTimeoutS);
  ProcessGroup& world = *groups.world;
  const int n = world.size();
  std::vector<float> x(static_cast<size_t>(2 * n));
  Tensor whole = tensor_of(x);
  Tensor one(x.data(), DType::kF32, Device::kCpu, {1});
  EXPECT_THROW(world.all_gather(one, whole), InternalError);
  EXPECT_THROW(world.reduce_scatter(whole, one, ReduceOp::kSum), InternalError);
  EXPECT_THROW(world.broadcast(one, n), InternalError);
  EXPECT_THROW(world.send(one, -1, 0), InternalError);
  EXPECT_THROW(world.recv(one, 0, -3), InternalError);
}

// ---- Timeouts ---------------------------------------------------------------------------------------------
//
// World ranks pair up (0,1), (2,3), ... in a group named "pair" with a 1 s timeout. The first rank of each pair
// starts an operation; its partner stays away, blocked in a barrier on a separate communicator that the first
// rank joins only after its wait has timed out. Then the partner takes part, and the first rank waits again,
// so every request completes and MPI is left clean.
class TimeoutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (world_size() % 2 != 0) GTEST_SKIP() << "needs an even number of ranks";
    // MPI_Comm_split and MPI_Comm_dup block without a timeout: first make sure every rank has come this far.
    MpiProcessGroup(MPI_COMM_WORLD, "world", kTimeoutS).barrier();
    MPI_Comm pair_comm = MPI_COMM_NULL;
    MPI_Comm_split(MPI_COMM_WORLD, world_rank() / 2, world_rank(), &pair_comm);
    pair_ = std::make_unique<MpiProcessGroup>(pair_comm, "pair", kShortTimeoutS);
    MPI_Comm meeting_comm = MPI_COMM_NULL;
    MPI_Comm_dup(MPI_COMM_WORLD, &meeting_comm);
    meeting_ = std::make_unique<MpiProcessGroup>(meeting_comm, "meeting", kTimeoutS);
    first_ = world_rank() - world_rank() % 2;
  }

  // "(world ranks 2,3)" for the pair of world ranks 2 and 3.
  std::string pair_ranks() const {
    return "(world ranks " + std::to_string(first_) + "," + std::to_string(first_ + 1) + ")";
  }

  // The partner's waits use the pair's short timeout too; on a loaded machine the first rank may be
  // descheduled for a while, so the partner retries instead of failing the test.
  static void wait_patiently(Work& work) {
    for (int attempt = 1;; ++attempt) {
      try {
        work.wait();
        return;
      } catch (const CommError&) {
        if (attempt == 30) throw;
      }
    }
  }

  // Runs `wait` and returns its CommError's message and how long it took; fails if nothing was thrown.
  template <typename F>
  static std::string expect_timeout(F wait, double* seconds) {
    const auto start = std::chrono::steady_clock::now();
    std::string message;
    try {
      wait();
      ADD_FAILURE() << "no CommError";
    } catch (const CommError& error) {
      message = error.what();
    }
    *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return message;
  }

  std::unique_ptr<MpiProcessGroup> pair_;
  std::unique_ptr<MpiProcessGroup> meeting_;
  int first_ = 0;  // world rank of the pair's first member
};

TEST_F(TimeoutTest, AllReduceWithALatePeerThrowsNamingGroupAndRanks) {
  std::vector<float> x(1024, static_cast<float>(pair_->rank() + 1));
  if (pair_->rank() == 0) {
    WorkHandle work = pair_->all_reduce(tensor_of(x), ReduceOp::kSum);
    EXPECT_FALSE(work->test());
    double seconds = 0;
    const std::string message = expect_timeout([&] { work->wait(); }, &seconds);
    EXPECT_TRUE(contains(message, "all_reduce of 1024 f32 on group 'pair' " + pair_ranks() +
                                      " did not complete within 1 s: a peer rank is missing, stuck or dead"))
        << message;
    EXPECT_TRUE(contains(message, "(" + process_label() + ")")) << message;
    EXPECT_GE(seconds, 0.9 * kShortTimeoutS);
    EXPECT_LT(seconds, 10 * kShortTimeoutS);
    meeting_->barrier();
    wait_patiently(*work);  // the partner has joined: the same request now completes
  } else {
    meeting_->barrier();
    WorkHandle work = pair_->all_reduce(tensor_of(x), ReduceOp::kSum);
    wait_patiently(*work);
  }
  for (float v : x) EXPECT_EQ(v, 3.0f);
}

TEST_F(TimeoutTest, RecvFromAPeerThatDoesNotSendThrowsNamingThePeer) {
  std::vector<int32_t> x(16, pair_->rank() == 0 ? -1 : 9);
  if (pair_->rank() == 0) {
    WorkHandle work = pair_->recv(tensor_of(x), 1, 7);
    double seconds = 0;
    const std::string message = expect_timeout([&] { work->wait(); }, &seconds);
    const std::string peer = std::to_string(first_ + 1);
    EXPECT_TRUE(contains(message, "recv of 16 i32 from world rank " + peer + " (tag 7) on group 'pair' " +
                                      pair_ranks() + " did not complete within 1 s: world rank " + peer +
                                      " is missing, stuck or dead, or never posted the matching send"))
        << message;
    EXPECT_GE(seconds, 0.9 * kShortTimeoutS);
    meeting_->barrier();
    wait_patiently(*work);
  } else {
    meeting_->barrier();
    wait_patiently(*pair_->send(tensor_of(x), 0, 7));
  }
  for (int32_t v : x) EXPECT_EQ(v, 9);
}

TEST_F(TimeoutTest, AbandonedWorkGivesUpAfterTheTimeoutInsteadOfHanging) {
  // The first rank's buffer must outlive the test: its abandoned request may still write to it.
  static std::vector<float> abandoned_buffer(8, 1.0f);
  std::vector<float> x(8, 1.0f);
  if (pair_->rank() == 0) {
    const auto start = std::chrono::steady_clock::now();
    { WorkHandle dropped = pair_->all_reduce(tensor_of(abandoned_buffer), ReduceOp::kSum); }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_GE(seconds, 0.9 * kShortTimeoutS);
    EXPECT_LT(seconds, 10 * kShortTimeoutS);
    meeting_->barrier();
  } else {
    meeting_->barrier();
    WorkHandle work = pair_->all_reduce(tensor_of(x), ReduceOp::kSum);
    wait_patiently(*work);
    for (float v : x) EXPECT_EQ(v, 2.0f);
  }
  // The first rank polls MPI in this barrier, which moves its abandoned all_reduce along to completion.
  meeting_->barrier();
}

TEST_F(TimeoutTest, WorkLeftBehindByATimedOutWaitGivesUpAtItsOwnDeadline) {
  // Two operations in flight when the peer stays away (as DP buckets are): the first wait times out at the
  // deadline; the second, dropped while the error unwinds, must not wait a second full timeout.
  static std::vector<float> first_buffer(8, 1.0f), second_buffer(8, 1.0f);
  std::vector<float> x(8, 1.0f), y(8, 1.0f);
  if (pair_->rank() == 0) {
    const auto start = std::chrono::steady_clock::now();
    try {
      WorkHandle first = pair_->all_reduce(tensor_of(first_buffer), ReduceOp::kSum);
      WorkHandle second = pair_->all_reduce(tensor_of(second_buffer), ReduceOp::kSum);
      first->wait();
      ADD_FAILURE() << "no CommError";
    } catch (const CommError&) {
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_GE(seconds, 0.9 * kShortTimeoutS);
    EXPECT_LT(seconds, kShortTimeoutS + 0.5) << "the dropped operation waited a timeout of its own";
    meeting_->barrier();
  } else {
    meeting_->barrier();
    WorkHandle a = pair_->all_reduce(tensor_of(x), ReduceOp::kSum);
    WorkHandle b = pair_->all_reduce(tensor_of(y), ReduceOp::kSum);
    wait_patiently(*a);
    wait_patiently(*b);
    for (float v : y) EXPECT_EQ(v, 2.0f);
  }
  meeting_->barrier();
}

}  // namespace
}  // namespace tessera

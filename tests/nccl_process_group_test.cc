// NcclProcessGroup on GPU tensors. Run through mpirun (tests/mpi_test_main.cc).
//
// Size-1 groups (over MPI_COMM_SELF) run on every rank as soon as one GPU is visible: ranks may share it, since
// each communicator has one member. Tests of several members need a GPU per rank and skip otherwise (NCCL refuses
// two ranks of a communicator on one GPU). Everything skips without a GPU. Expected values are closed-form and
// small integers, exact in fp32 in any summation order.
#include "parallel/nccl_process_group.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <memory>
#include <numeric>
#include <vector>

#include "core/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device.h"
#include "parallel/mpi_check.h"
#include "parallel/mpi_process_group.h"
#include "parallel/rank_grid.h"
#include "tests/mpi_test_util.h"

namespace tessera {
namespace {

constexpr double kTimeoutS = 60;

using tessera::mpi_test::world_rank;
using tessera::mpi_test::world_size;

std::unique_ptr<MpiProcessGroup> self_group() {
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_dup(MPI_COMM_SELF, &comm));
  return std::make_unique<MpiProcessGroup>(comm, "self", kTimeoutS);
}

class NcclProcessGroupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA GPU visible";
    backend_ = std::make_unique<CudaBackend>(world_rank() % cuda::device_count());
  }

  // A device tensor of n f32 holding `values`.
  Tensor upload(const std::vector<float>& values) {
    buffers_.push_back(backend_->allocate(values.size() * sizeof(float)));
    Tensor t = buffers_.back().tensor(0, DType::kF32, {static_cast<int64_t>(values.size())});
    backend_->copy_from_host(t, values.data());
    return t;
  }
  std::vector<float> download(const Tensor& t) {
    std::vector<float> values(t.numel());
    backend_->copy_to_host(values.data(), t);
    return values;
  }

  std::unique_ptr<CudaBackend> backend_;
  std::vector<Buffer> buffers_;  // destroyed before backend_
};

std::vector<float> iota(size_t n, float start) {
  std::vector<float> values(n);
  std::iota(values.begin(), values.end(), start);
  return values;
}

TEST_F(NcclProcessGroupTest, SizeOneCollectivesLeaveOrCopyTheData) {
  auto group = NcclProcessGroup::create(self_group(), backend_->stream());
  EXPECT_EQ(group->size(), 1);
  EXPECT_EQ(group->rank(), 0);
  const std::vector<float> values = iota(1000, -500);
  Tensor t = upload(values);
  group->all_reduce(t, ReduceOp::kSum)->wait();
  group->all_reduce(t, ReduceOp::kMax)->wait();
  group->broadcast(t, 0)->wait();
  EXPECT_EQ(download(t), values);

  Tensor out = upload(std::vector<float>(1000, -1.0f));
  group->all_gather(out, t)->wait();
  EXPECT_EQ(download(out), values);
  Tensor scattered = upload(std::vector<float>(1000, -1.0f));
  group->reduce_scatter(scattered, t, ReduceOp::kSum)->wait();
  EXPECT_EQ(download(scattered), values);
}

TEST_F(NcclProcessGroupTest, CollectivesAreOrderedAfterTheComputeStream) {
  auto group = NcclProcessGroup::create(self_group(), backend_->stream());
  Tensor a = upload(std::vector<float>(4096, 0.0f));
  Tensor b = upload(std::vector<float>(4096, 0.0f));
  // Written by the compute stream, gathered by the group's stream, then read on the compute stream again.
  backend_->fill(a, 3.0f);
  WorkHandle work = group->all_gather(b, a);
  work->wait();
  backend_->scale(b, 2.0f);
  EXPECT_EQ(download(b), std::vector<float>(4096, 6.0f));
}

TEST_F(NcclProcessGroupTest, SelfSendAndReceivePostedInEitherOrder) {
  auto group = NcclProcessGroup::create(self_group(), backend_->stream());
  const std::vector<float> first = iota(777, 1), second = iota(777, 1000);
  Tensor to_send = upload(first), to_send_too = upload(second);
  Tensor received = upload(std::vector<float>(777, 0.0f)), received_too = upload(std::vector<float>(777, 0.0f));
  // Receive posted before its send: launched only together (Note [Deferred point-to-point]).
  WorkHandle recv = group->recv(received, 0, 5);
  WorkHandle send = group->send(to_send, 0, 5);
  recv->wait();
  send->wait();
  EXPECT_EQ(download(received), first);
  WorkHandle send_too = group->send(to_send_too, 0, 6);
  WorkHandle recv_too = group->recv(received_too, 0, 6);
  group->flush();
  while (!recv_too->test()) {
  }
  send_too->wait();
  recv_too->wait();
  EXPECT_EQ(download(received_too), second);
}

TEST_F(NcclProcessGroupTest, HostTensorsGoThroughMpi) {
  auto group = NcclProcessGroup::create(self_group(), backend_->stream());
  float host[3] = {1, 2, 3};
  group->all_reduce(Tensor(host, DType::kF32, Device::kCpu, {3}), ReduceOp::kSum)->wait();
  EXPECT_EQ(host[0] + host[1] + host[2], 6.0f);
  group->barrier();
}

TEST_F(NcclProcessGroupTest, AbortedGroupThrowsCommError) {
  auto group = NcclProcessGroup::create(self_group(), backend_->stream());
  Tensor t = upload(iota(16, 0));
  group->abort();
  EXPECT_THROW(group->all_reduce(t, ReduceOp::kSum), CommError);
}

// ---- several ranks: one GPU each -----------------------------------------------------------------------------

class NcclMultiRankTest : public NcclProcessGroupTest {
 protected:
  void SetUp() override {
    if (world_size() < 2 || cuda::device_count() < world_size()) {
      GTEST_SKIP() << "needs one GPU per rank and at least 2 ranks (" << cuda::device_count() << " GPU(s), "
                   << world_size() << " rank(s))";
    }
    NcclProcessGroupTest::SetUp();
  }
};

TEST_F(NcclMultiRankTest, WorldGroupsReduceGatherAndExchange) {
  const int rank = world_rank(), size = world_size();
  ParallelGroups groups = make_nccl_groups(RankGrid(1, 1, size), rank, kTimeoutS, backend_->stream());
  ProcessGroup& dp = *groups.dp;
  ASSERT_EQ(dp.size(), size);

  // all_reduce of the rank: n(n-1)/2 everywhere; max: n-1.
  Tensor t = upload(std::vector<float>(333, static_cast<float>(rank)));
  dp.all_reduce(t, ReduceOp::kSum)->wait();
  EXPECT_EQ(download(t), std::vector<float>(333, size * (size - 1) / 2.0f));
  Tensor m = upload(std::vector<float>(5, static_cast<float>(rank)));
  dp.all_reduce(m, ReduceOp::kMax)->wait();
  EXPECT_EQ(download(m), std::vector<float>(5, static_cast<float>(size - 1)));

  // all_gather: chunk r holds r.
  Tensor mine = upload(std::vector<float>(7, static_cast<float>(rank)));
  Tensor all = upload(std::vector<float>(7 * size, -1.0f));
  dp.all_gather(all, mine)->wait();
  std::vector<float> expected;
  for (int r = 0; r < size; ++r) expected.insert(expected.end(), 7, static_cast<float>(r));
  EXPECT_EQ(download(all), expected);

  // A ring: everyone receives from the left before sending to the right (deferred launch makes it safe).
  const int right = (rank + 1) % size, left = (rank + size - 1) % size;
  Tensor outgoing = upload(std::vector<float>(100, static_cast<float>(rank)));
  Tensor incoming = upload(std::vector<float>(100, -1.0f));
  WorkHandle recv = dp.recv(incoming, left, 0);
  WorkHandle send = dp.send(outgoing, right, 0);
  recv->wait();
  send->wait();
  EXPECT_EQ(download(incoming), std::vector<float>(100, static_cast<float>(left)));
}

}  // namespace
}  // namespace tessera

// HostStagedProcessGroup over MPI groups, with a stand-in device backend whose "device" memory is host memory
// that only its copies may touch, so the staging logic is tested on machines without a GPU. Run through mpirun
// (tests/mpi_test_main.cc) on 2 ranks or more. Expected values are closed-form small integers.
#include "parallel/host_staged_process_group.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "core/backend.h"
#include "parallel/mpi_check.h"
#include "parallel/mpi_process_group.h"

namespace tessera {
namespace {

// Tensors it allocates say Device::kCuda; only the memory ops are implemented (the staging uses nothing else).
class FakeDeviceBackend final : public Backend {
 public:
  Device device() const override { return Device::kCuda; }
  const char* name() const override { return "fake-device"; }
  Buffer allocate(size_t bytes) override { return Buffer(this, std::calloc(bytes + 1, 1), bytes); }
  void deallocate(void* data) override { std::free(data); }
  void copy_from_host(Tensor dst, const void* src) override {
    ++copies_in;
    std::memcpy(dst.data(), src, dst.bytes());
  }
  void copy_to_host(void* dst, Tensor src) override {
    ++copies_out;
    std::memcpy(dst, src.data(), src.bytes());
  }
  void copy(Tensor dst, Tensor src) override { std::memcpy(dst.data(), src.data(), dst.bytes()); }
  void fill(Tensor, float) override { unused(); }
  void synchronize() override {}
  void matmul_forward(Tensor, Tensor, Tensor, Tensor) override { unused(); }
  void matmul_backward(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor) override { unused(); }
  void layernorm_forward(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, float) override { unused(); }
  void layernorm_backward(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor) override { unused(); }
  void rmsnorm_forward(Tensor, Tensor, Tensor, Tensor, float) override { unused(); }
  void rmsnorm_backward(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor) override { unused(); }
  void gelu_forward(Tensor, Tensor) override { unused(); }
  void gelu_backward(Tensor, Tensor, Tensor) override { unused(); }
  void add(Tensor, Tensor, Tensor) override { unused(); }
  void swiglu_forward(Tensor, Tensor) override { unused(); }
  void swiglu_backward(Tensor, Tensor, Tensor) override { unused(); }
  void rope_forward(Tensor, int, int, int, float) override { unused(); }
  void rope_backward(Tensor, int, int, int, float) override { unused(); }
  void attention_forward(Tensor, Tensor, Tensor, int, int) override { unused(); }
  void rope_forward_at(Tensor, int, int, int, int, float) override { unused(); }
  void cached_attention_forward(Tensor, Tensor, Tensor, Tensor, int, int, int) override { unused(); }
  void attention_backward(Tensor, Tensor, Tensor, Tensor, Tensor, int, int) override { unused(); }
  void embedding_forward(Tensor, Tensor, Tensor, Tensor, int, int64_t) override { unused(); }
  void embedding_backward(Tensor, Tensor, Tensor, Tensor, int, int64_t) override { unused(); }
  void cross_entropy_row_max(Tensor, Tensor, int64_t) override { unused(); }
  void cross_entropy_row_stats(Tensor, Tensor, Tensor, Tensor, Tensor, int64_t, int64_t) override { unused(); }
  void cross_entropy_loss_backward(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, int64_t, int64_t,
                                   float) override {
    unused();
  }
  void adamw_update(Tensor, Tensor, Tensor, Tensor, const AdamWStep&, Tensor) override { unused(); }
  double sum_of_squares(Tensor) override {
    unused();
    return 0;
  }
  void scale(Tensor, float) override { unused(); }

  int copies_in = 0;
  int copies_out = 0;

 private:
  [[noreturn]] static void unused() { throw InternalError("the staging group called a compute op"); }
};

class HostStagedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    MPI_Comm comm = MPI_COMM_NULL;
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm));
    group_ = std::make_unique<HostStagedProcessGroup>(std::make_unique<MpiProcessGroup>(comm, "world", 60.0), backend_);
    rank_ = group_->rank();
    size_ = group_->size();
    if (size_ < 2) GTEST_SKIP() << "needs 2 ranks or more";
  }

  Tensor device_tensor(const std::vector<float>& values) {
    buffers_.push_back(backend_.allocate(values.size() * sizeof(float)));
    Tensor t = buffers_.back().tensor(0, DType::kF32, {static_cast<int64_t>(values.size())});
    std::memcpy(t.data(), values.data(), t.bytes());
    return t;
  }
  static std::vector<float> contents(const Tensor& t) {
    const float* p = static_cast<const float*>(t.data());
    return std::vector<float>(p, p + t.numel());
  }

  FakeDeviceBackend backend_;
  std::vector<Buffer> buffers_;
  std::unique_ptr<HostStagedProcessGroup> group_;
  int rank_ = 0, size_ = 1;
};

TEST_F(HostStagedTest, AllReduceStagesThroughTheHostAndCopiesBackOnWait) {
  Tensor t = device_tensor(std::vector<float>(10, static_cast<float>(rank_)));
  WorkHandle work = group_->all_reduce(t, ReduceOp::kSum);
  EXPECT_EQ(backend_.copies_out, 1);
  work->wait();
  EXPECT_EQ(backend_.copies_in, 1);
  EXPECT_EQ(contents(t), std::vector<float>(10, size_ * (size_ - 1) / 2.0f));
  work->wait();  // a second wait copies nothing more
  EXPECT_EQ(backend_.copies_in, 1);
}

TEST_F(HostStagedTest, GatherScatterAndBroadcast) {
  Tensor mine = device_tensor(std::vector<float>(3, static_cast<float>(rank_ + 1)));
  Tensor all = device_tensor(std::vector<float>(3 * size_, -1.0f));
  group_->all_gather(all, mine)->wait();
  std::vector<float> gathered;
  for (int r = 0; r < size_; ++r) gathered.insert(gathered.end(), 3, static_cast<float>(r + 1));
  EXPECT_EQ(contents(all), gathered);

  // reduce_scatter of `all` (identical on every rank): chunk r sums to size * (r + 1).
  Tensor chunk = device_tensor(std::vector<float>(3, -1.0f));
  group_->reduce_scatter(chunk, all, ReduceOp::kSum)->wait();
  EXPECT_EQ(contents(chunk), std::vector<float>(3, static_cast<float>(size_ * (rank_ + 1))));

  Tensor b = device_tensor(std::vector<float>(4, static_cast<float>(rank_ * 10)));
  group_->broadcast(b, size_ - 1)->wait();
  EXPECT_EQ(contents(b), std::vector<float>(4, static_cast<float>((size_ - 1) * 10)));
}

TEST_F(HostStagedTest, SendReceiveAroundARing) {
  const int right = (rank_ + 1) % size_, left = (rank_ + size_ - 1) % size_;
  Tensor outgoing = device_tensor(std::vector<float>(5, static_cast<float>(rank_)));
  Tensor incoming = device_tensor(std::vector<float>(5, -1.0f));
  WorkHandle recv = group_->recv(incoming, left, 3);
  WorkHandle send = group_->send(outgoing, right, 3);
  while (!recv->test()) {
  }
  send->wait();
  EXPECT_EQ(contents(incoming), std::vector<float>(5, static_cast<float>(left)));
}

TEST_F(HostStagedTest, HostTensorsPassStraightThrough) {
  float host[2] = {1, static_cast<float>(rank_)};
  group_->all_reduce(Tensor(host, DType::kF32, Device::kCpu, {2}), ReduceOp::kMax)->wait();
  EXPECT_EQ(host[1], static_cast<float>(size_ - 1));
  EXPECT_EQ(backend_.copies_in + backend_.copies_out, 0);
}

}  // namespace
}  // namespace tessera

// Host staging of device tensors for a host-memory process group.
#include "parallel/host_staged_process_group.h"

#include <cstddef>
#include <utility>

#include "core/check.h"

namespace tessera {

namespace {

bool on_host(const Tensor& t) { return t.device() == Device::kCpu; }

// Host memory shaped like a device tensor, flat.
struct HostCopy {
  std::vector<std::byte> bytes;
  Tensor tensor;
};

HostCopy host_copy_of(const Tensor& device, Backend& backend, bool copy_contents) {
  HostCopy copy;
  copy.bytes.resize(device.bytes());
  copy.tensor = Tensor(copy.bytes.data(), device.dtype(), Device::kCpu, {device.numel()});
  if (copy_contents && device.bytes() > 0) backend.copy_to_host(copy.bytes.data(), device);
  return copy;
}

class StagedWork final : public Work {
 public:
  // result (undefined: none) receives `staged` when the operation completes.
  StagedWork(Backend& backend, std::vector<HostCopy> staged, WorkHandle inner, Tensor result, size_t result_index)
      : backend_(backend),
        staged_(std::move(staged)),
        inner_(std::move(inner)),
        result_(result),
        result_index_(result_index) {}

  // The inner Work's destructor waits for the host buffers' transfer before they are freed: destroy it first.
  ~StagedWork() override { inner_.reset(); }

  void wait() override {
    inner_->wait();
    copy_back();
  }

  bool test() override {
    if (!inner_->test()) return false;
    copy_back();
    return true;
  }

 private:
  void copy_back() {
    if (copied_ || !result_.defined() || result_.bytes() == 0) return;
    backend_.copy_from_host(result_, staged_[result_index_].bytes.data());
    copied_ = true;
  }

  Backend& backend_;
  std::vector<HostCopy> staged_;
  WorkHandle inner_;
  Tensor result_;
  size_t result_index_;
  bool copied_ = false;
};

}  // namespace

HostStagedProcessGroup::HostStagedProcessGroup(std::unique_ptr<ProcessGroup> inner, Backend& backend)
    : inner_(std::move(inner)), backend_(backend) {}

WorkHandle HostStagedProcessGroup::all_reduce(Tensor t, ReduceOp op) {
  if (on_host(t)) return inner_->all_reduce(t, op);
  std::vector<HostCopy> staged;
  staged.push_back(host_copy_of(t, backend_, true));
  WorkHandle inner = inner_->all_reduce(staged[0].tensor, op);
  return std::make_unique<StagedWork>(backend_, std::move(staged), std::move(inner), t, 0);
}

WorkHandle HostStagedProcessGroup::reduce_scatter(Tensor out, Tensor in, ReduceOp op) {
  if (on_host(out) && on_host(in)) return inner_->reduce_scatter(out, in, op);
  TS_ASSERT(!on_host(out) && !on_host(in), "reduce_scatter mixes host and device tensors");
  std::vector<HostCopy> staged;
  staged.push_back(host_copy_of(in, backend_, true));
  staged.push_back(host_copy_of(out, backend_, false));
  WorkHandle inner = inner_->reduce_scatter(staged[1].tensor, staged[0].tensor, op);
  return std::make_unique<StagedWork>(backend_, std::move(staged), std::move(inner), out, 1);
}

WorkHandle HostStagedProcessGroup::all_gather(Tensor out, Tensor in) {
  if (on_host(out) && on_host(in)) return inner_->all_gather(out, in);
  TS_ASSERT(!on_host(out) && !on_host(in), "all_gather mixes host and device tensors");
  std::vector<HostCopy> staged;
  staged.push_back(host_copy_of(in, backend_, true));
  staged.push_back(host_copy_of(out, backend_, false));
  WorkHandle inner = inner_->all_gather(staged[1].tensor, staged[0].tensor);
  return std::make_unique<StagedWork>(backend_, std::move(staged), std::move(inner), out, 1);
}

WorkHandle HostStagedProcessGroup::broadcast(Tensor t, int root) {
  if (on_host(t)) return inner_->broadcast(t, root);
  std::vector<HostCopy> staged;
  staged.push_back(host_copy_of(t, backend_, rank() == root));
  WorkHandle inner = inner_->broadcast(staged[0].tensor, root);
  return std::make_unique<StagedWork>(backend_, std::move(staged), std::move(inner), rank() == root ? Tensor() : t, 0);
}

WorkHandle HostStagedProcessGroup::send(Tensor t, int peer, int tag) {
  if (on_host(t)) return inner_->send(t, peer, tag);
  std::vector<HostCopy> staged;
  staged.push_back(host_copy_of(t, backend_, true));
  WorkHandle inner = inner_->send(staged[0].tensor, peer, tag);
  return std::make_unique<StagedWork>(backend_, std::move(staged), std::move(inner), Tensor(), 0);
}

WorkHandle HostStagedProcessGroup::recv(Tensor t, int peer, int tag) {
  if (on_host(t)) return inner_->recv(t, peer, tag);
  std::vector<HostCopy> staged;
  staged.push_back(host_copy_of(t, backend_, false));
  WorkHandle inner = inner_->recv(staged[0].tensor, peer, tag);
  return std::make_unique<StagedWork>(backend_, std::move(staged), std::move(inner), t, 0);
}

ParallelGroups stage_through_host(ParallelGroups groups, Backend& backend) {
  ParallelGroups staged;
  staged.world = std::make_unique<HostStagedProcessGroup>(std::move(groups.world), backend);
  staged.tp = std::make_unique<HostStagedProcessGroup>(std::move(groups.tp), backend);
  staged.pp = std::make_unique<HostStagedProcessGroup>(std::move(groups.pp), backend);
  staged.dp = std::make_unique<HostStagedProcessGroup>(std::move(groups.dp), backend);
  return staged;
}

}  // namespace tessera

// HostStagedProcessGroup: runs a host-memory ProcessGroup (MPI) on device tensors by staging them through host
// memory.
//
// The GPU path when NCCL cannot be used: several ranks sharing one GPU (NCCL refuses two ranks of a communicator
// on one device), a build without NCCL, or parallel.comm=MPI. A device tensor is copied into a host buffer with
// Backend::copy_to_host (which waits for everything the backend had issued), the wrapped group's operation runs
// on that buffer, and wait() (or the test() that first sees completion) copies the result back with
// Backend::copy_from_host. Host tensors pass straight through. Every byte crosses the host twice and the host
// waits for the GPU at every operation: correct, with the wrapped group's timeouts, and slow. Backend-agnostic:
// it only calls the backend's copies.
//
// Thread-safety and ordering rules: those of the wrapped group.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "parallel/process_group.h"

namespace tessera {

class HostStagedProcessGroup final : public ProcessGroup {
 public:
  // inner works on host tensors; backend owns the device tensors passed in and must outlive the group.
  HostStagedProcessGroup(std::unique_ptr<ProcessGroup> inner, Backend& backend);

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const std::string& name() const override { return inner_->name(); }
  const std::vector<int>& world_ranks() const override { return inner_->world_ranks(); }

  // Each copies its device inputs to the host before it returns (synchronizing the backend) and copies results
  // back to the device in wait(). A Work destroyed without wait() waits as the inner one does but copies
  // nothing back.
  WorkHandle all_reduce(Tensor t, ReduceOp op) override;
  WorkHandle reduce_scatter(Tensor out, Tensor in, ReduceOp op) override;
  WorkHandle all_gather(Tensor out, Tensor in) override;
  WorkHandle broadcast(Tensor t, int root) override;
  WorkHandle send(Tensor t, int peer, int tag) override;
  WorkHandle recv(Tensor t, int peer, int tag) override;
  void barrier() override { inner_->barrier(); }

 private:
  std::unique_ptr<ProcessGroup> inner_;
  Backend& backend_;
};

// Wraps each of the four groups (host-memory groups, e.g. from make_mpi_groups) for a device backend.
ParallelGroups stage_through_host(ParallelGroups groups, Backend& backend);

}  // namespace tessera

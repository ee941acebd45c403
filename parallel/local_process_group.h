// LocalProcessGroup: a group of one process, with no MPI at all.
//
// Lets single-process runs and unit tests use the same code as a parallel run: with one rank, a reduction or a
// broadcast leaves the tensor as it is and a gather or scatter is a copy. Point-to-point messages would need a
// second rank, so send and recv throw.
#pragma once

#include <string>
#include <vector>

#include "parallel/process_group.h"

namespace tessera {

class LocalProcessGroup final : public ProcessGroup {
 public:
  // rank 0 of 1, world rank 0. `name` appears in error messages.
  explicit LocalProcessGroup(std::string name);

  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return world_ranks_; }

  // Every operation completes before it returns; its Work is already done. Same argument checks as the MPI
  // group (f32/i32, matching sizes). reduce_scatter and all_gather copy in to out (CPU tensors unless in and
  // out are the same memory).
  WorkHandle all_reduce(Tensor t, ReduceOp op) override;
  WorkHandle reduce_scatter(Tensor out, Tensor in, ReduceOp op) override;
  WorkHandle all_gather(Tensor out, Tensor in) override;
  WorkHandle broadcast(Tensor t, int root) override;
  // Throw CommError: a group of one has no peer to talk to.
  WorkHandle send(Tensor t, int peer, int tag) override;
  WorkHandle recv(Tensor t, int peer, int tag) override;
  void barrier() override {}

 private:
  std::string name_;
  std::vector<int> world_ranks_{0};
};

}  // namespace tessera

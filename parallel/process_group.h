// ProcessGroup: collective and point-to-point communication among the ranks of one group.
//
// The code above this interface (model shards, optimizer, data loader, checkpoints) never knows whether MPI
// or NCCL carries the bytes. Every operation is asynchronous: it returns a Work handle, and the result is
// ready after wait(). Every wait has a deadline (the group's timeout): a peer that never arrives turns into a
// CommError naming the operation, the group and its member ranks, instead of a hang.
//
// Ranks in arguments (root, peer) are ranks within the group, 0..size()-1. Tensors must stay alive and
// untouched until their Work completes. Supported dtypes: f32, bf16 (reduced in f32, rounded
// to nearest even) and i32.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tessera {

enum class ReduceOp { kSum, kMax };

// A pending operation. wait() blocks until it completes, or throws CommError after the group's timeout.
// Destroying a Work that was never waited on waits for it (so buffers are never freed under a transfer).
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  // True once the operation has completed; never blocks.
  virtual bool test() = 0;
};
using WorkHandle = std::unique_ptr<Work>;

class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "tp", "dp", "world", ...: used in error messages.
  virtual const std::string& name() const = 0;
  // World ranks of the members, in group-rank order: used in error messages.
  virtual const std::vector<int>& world_ranks() const = 0;

  // In place: t = op over all ranks of t.
  virtual WorkHandle all_reduce(Tensor t, ReduceOp op) = 0;
  // in holds size() equal chunks; rank r receives op over all ranks of chunk r in out.
  virtual WorkHandle reduce_scatter(Tensor out, Tensor in, ReduceOp op) = 0;
  // out = concatenation over ranks (in rank order) of each rank's in.
  virtual WorkHandle all_gather(Tensor out, Tensor in) = 0;
  // t on every rank = t on root.
  virtual WorkHandle broadcast(Tensor t, int root) = 0;
  virtual WorkHandle send(Tensor t, int peer, int tag) = 0;
  virtual WorkHandle recv(Tensor t, int peer, int tag) = 0;
  // Blocks until every rank arrives, or throws CommError after the timeout.
  virtual void barrier() = 0;
};

// The groups a rank belongs to, built once by the launcher and passed by reference to every component.
struct ParallelGroups {
  std::unique_ptr<ProcessGroup> world;
  std::unique_ptr<ProcessGroup> tp;
  std::unique_ptr<ProcessGroup> pp;
  std::unique_ptr<ProcessGroup> dp;
};

}  // namespace tessera

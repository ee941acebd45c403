// MpiProcessGroup: the ProcessGroup backend over an MPI communicator (CPU tensors; the CPU training path).
//
// Every operation is a nonblocking MPI call (MPI_Iallreduce, MPI_Isend, ...) whose request lives in the
// returned Work. Note [Timed waits]: Work::wait() polls MPI_Test (spinning briefly, then sleeping with a
// backoff from 50 us to 1 ms so that oversubscribed ranks leave their cores to the peers they wait for)
// until the request completes or the group's timeout, counted from the start of that wait() call, passes;
// then it throws CommError naming the operation, the group, its world ranks and this process. The request
// stays pending after a timeout: calling wait() again waits afresh, so a caller that knows the peer is only
// late can still complete it. A Work destroyed without a successful wait() polls until one timeout after the
// operation started (at least once; not at all if a wait() already timed out), so operations left in flight
// by another's timeout give up together, then logs to stderr and leaves the request behind: the buffer may
// still be written, so the caller must abort the job (the launcher does).
//
// Thread-safety: a group and its Work handles are used from one thread (MPI_THREAD_FUNNELED).
#pragma once

#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "parallel/process_group.h"

namespace tessera {

class MpiProcessGroup final : public ProcessGroup {
 public:
  // Takes ownership of comm and frees it in the destructor (MPI_COMM_WORLD and MPI_COMM_SELF are used, never
  // freed; prefer a duplicate so Tessera's messages cannot mix with another library's). Sets MPI_ERRORS_RETURN
  // on it. Every wait on this group gives up after timeout_s seconds (> 0). Local: no communication.
  MpiProcessGroup(MPI_Comm comm, std::string name, double timeout_s);
  // Frees the communicator (skipped once MPI is finalized). Pending operations complete in the background.
  ~MpiProcessGroup() override;
  MpiProcessGroup(const MpiProcessGroup&) = delete;
  MpiProcessGroup& operator=(const MpiProcessGroup&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override;
  const std::vector<int>& world_ranks() const override;
  double timeout_s() const;
  MPI_Comm comm() const { return comm_; }

  // Collectives: every rank of the group must start the same collectives in the same order (MPI's rule for
  // nonblocking collectives); the waits may come in any order. Tensors are CPU f32 or i32 of at most
  // INT_MAX elements and stay untouched until the Work completes.
  WorkHandle all_reduce(Tensor t, ReduceOp op) override;
  WorkHandle reduce_scatter(Tensor out, Tensor in, ReduceOp op) override;
  WorkHandle all_gather(Tensor out, Tensor in) override;
  WorkHandle broadcast(Tensor t, int root) override;
  // Point-to-point: messages between two ranks with the same tag arrive in order; 0 <= tag <= MPI_TAG_UB.
  // A recv whose message has a different element count throws CommError at wait().
  WorkHandle send(Tensor t, int peer, int tag) override;
  WorkHandle recv(Tensor t, int peer, int tag) override;
  void barrier() override;

  // What a Work needs to describe its group after the group itself is gone.
  struct Info;

 private:
  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
  int tag_upper_bound_ = 32767;
  std::shared_ptr<const Info> info_;
};

}  // namespace tessera

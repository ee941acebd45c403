// NcclProcessGroup: the ProcessGroup backend over a NCCL communicator, for GPU tensors (the GPU training path).
// Compiled only in CUDA builds.
//
// Each group owns one NCCL communicator, one CUDA stream for its communication and a watchdog thread. Host
// tensors (the loss and gradient-norm scalars the trainer reduces) go through the group's MPI communicator
// instead, with the MPI group's timed waits: NCCL moves device memory only.
//
// Note [NCCL stream ordering]: an operation records an event on the compute stream it was given (the
// CudaBackend's), makes the group's stream wait for it, and issues the NCCL call to the group's stream: it
// sees everything the compute stream had been given before, without the host waiting. Work::wait() makes the
// compute stream wait for the operation's completion event and returns at once; "the result is ready after
// wait()" therefore holds for everything issued to the compute stream afterwards, which includes every host
// read (CudaBackend::copy_to_host synchronizes the compute stream). Work::test() asks the event without
// blocking. Nothing on the hot path blocks the host.
//
// Note [Deferred point-to-point]: ncclSend and ncclRecv block the GPU until the peer's matching call runs, and
// the operations of one communicator run one after another, so a recv issued before a send (the tied-embedding
// exchange does that on both ends) would deadlock if each were launched on its own. send() and recv() are
// therefore queued and launched together, in one ncclGroupStart/ncclGroupEnd, when the group next has to make
// progress: a wait() or test() on any of its Works, a collective, a barrier, flush(), or destruction. Messages
// between two ranks are matched in the order they are posted; tags are not transmitted (NCCL has none), so
// callers must post a pair's sends and receives in the same order on both sides (the trainer does), and a
// message-size mismatch cannot be detected.
//
// Note [NCCL timeouts]: the watchdog thread polls, every few milliseconds, ncclCommGetAsyncError and the
// completion events of launched operations. An operation unfinished after the group's timeout (counted from its
// launch), or an asynchronous NCCL error, makes the watchdog print the reason to stderr and abort the
// communicator (ncclCommAbort), which ends its kernels so that no stream stays blocked; every later call on
// the group and every wait() then throws CommError naming the operation, the group, its world ranks and this
// process.
//
// Note [Non-blocking communicators]: communicators are created non-blocking (ncclConfig_t.blocking = 0), so
// that no NCCL call can hold the host: initialization, splits, and a collective's launch (where NCCL connects
// to its peers on first use, NCCL_RUNTIME_CONNECT) return ncclInProgress, and the calling thread polls
// ncclCommGetAsyncError with a short back-off until the call has settled, for at most the group's timeout.
// The deadline, or an error, aborts the communicator and throws CommError naming the operation, the group, its
// world ranks and this process, as the MPI groups do. The communicator's lock is held only for one call or
// one query at a time, so the watchdog's abort always gets it (it no longer aborts without the lock).
//
// Thread-safety: a group and its Works are used from one thread (besides the group's own watchdog), whose
// current CUDA device is the group's.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "parallel/mpi_process_group.h"
#include "parallel/process_group.h"
#include "parallel/rank_grid.h"

namespace tessera {

class NcclProcessGroup final : public ProcessGroup {
 public:
  // Collective over the ranks of host_group (an MPI group with the same members, which the new group keeps
  // for host tensors and barriers): rank 0 makes a NCCL unique id, broadcasts it over host_group (a timed
  // wait), and every rank joins the communicator (ncclCommInitRankConfig). The calling thread's current device
  // is this rank's GPU; no two ranks of the group may share a GPU (NCCL refuses). compute_stream is the stream
  // whose work the group's operations are ordered after (Note [NCCL stream ordering]).
  static std::unique_ptr<NcclProcessGroup> create(std::unique_ptr<MpiProcessGroup> host_group,
                                                  cudaStream_t compute_stream);
  // Collective over every rank of parent: this rank's communicator is split from parent's (ncclCommSplit)
  // with the given color (equal for the members of one group) and key host_group->rank(). Every rank of parent
  // must call it, in the same order with respect to parent's other operations.
  static std::unique_ptr<NcclProcessGroup> split(NcclProcessGroup& parent, int color,
                                                 std::unique_ptr<MpiProcessGroup> host_group,
                                                 cudaStream_t compute_stream);
  // Launches queued point-to-point operations, waits (up to the timeout) for the group's stream, stops the
  // watchdog and destroys the communicator, or aborts it if operations are still pending.
  ~NcclProcessGroup() override;
  NcclProcessGroup(const NcclProcessGroup&) = delete;
  NcclProcessGroup& operator=(const NcclProcessGroup&) = delete;

  int rank() const override;
  int size() const override;
  const std::string& name() const override;
  const std::vector<int>& world_ranks() const override;

  // Collectives on GPU tensors run on NCCL; on host tensors, on the MPI group. Every rank of the group must
  // issue the same collectives in the same order. Asynchronous (Note [NCCL stream ordering]).
  WorkHandle all_reduce(Tensor t, ReduceOp op) override;
  WorkHandle reduce_scatter(Tensor out, Tensor in, ReduceOp op) override;
  WorkHandle all_gather(Tensor out, Tensor in) override;
  WorkHandle broadcast(Tensor t, int root) override;
  // Queued, then launched together (Note [Deferred point-to-point]); `tag` is not transmitted.
  WorkHandle send(Tensor t, int peer, int tag) override;
  WorkHandle recv(Tensor t, int peer, int tag) override;
  // Launches queued point-to-point operations, then an MPI barrier (host-blocking, timed).
  void barrier() override;

  // Launches the queued point-to-point operations now.
  void flush();
  // Aborts the communicator (ncclCommAbort): pending operations end and every later call throws CommError.
  // For the launcher after an error elsewhere. Idempotent.
  void abort();

  // The group's state, shared with its Works and its watchdog.
  struct Core;

 private:
  explicit NcclProcessGroup(std::shared_ptr<Core> core);
  std::shared_ptr<Core> core_;
};

// The world/tp/pp/dp groups of one rank over NCCL (make_mpi_groups for the host side, then a world
// communicator from a unique id and tp/pp/dp split from it). Collective over MPI_COMM_WORLD; same contract as
// make_mpi_groups. Every rank's GPU must be distinct from the others' (one rank per GPU).
ParallelGroups make_nccl_groups(const RankGrid& grid, int world_rank, double timeout_s, cudaStream_t compute_stream);

}  // namespace tessera

// MpiEnvironment: the process's MPI library, initialized once and finalized on destruction.
//
// The launcher's main() (or a multi-rank test's main) creates exactly one MpiEnvironment before anything
// else touches MPI, and keeps it alive until every MPI object (process groups, Work handles) is gone.
// Thread-safety: construct, use and destroy on the main thread. Errors from MPI calls are returned, not fatal: the
// world communicator gets MPI_ERRORS_RETURN, so a failed call becomes a CommError (see MPI_CHECK) that the launcher can
// report before calling abort().
#pragma once

#include <memory>

namespace tessera {

class MpiEnvironment {
 public:
  // Calls MPI_Init_thread asking for MPI_THREAD_FUNNELED (only the main thread calls MPI). argc/argv may be
  // null. Throws CommError if MPI was already initialized, or if the library offers less than FUNNELED.
  MpiEnvironment(int* argc, char*** argv);
  // MPI_Finalize. Every communicator and pending request should be released by then; if one is left over,
  // MPI_Finalize may block, so after an error call abort() instead of letting the destructor run.
  ~MpiEnvironment();

  // Move-only: exactly one object finalizes MPI.
  MpiEnvironment(MpiEnvironment&& other) noexcept;
  MpiEnvironment& operator=(MpiEnvironment&& other) = delete;
  MpiEnvironment(const MpiEnvironment&) = delete;
  MpiEnvironment& operator=(const MpiEnvironment&) = delete;

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  // The thread level MPI provided: MPI_THREAD_FUNNELED or higher.
  int thread_level() const { return thread_level_; }

  // Kills every process of the job with exit code `code` (MPI_Abort on the world, half a second after the call
  // so that the launcher still forwards this rank's last output). Use after a fatal error on any rank: peers
  // blocked in a collective would otherwise wait for their own timeouts. Never returns.
  [[noreturn]] void abort(int code);

  // For a rank about to exit on an error that every rank may have hit the same way (a ConfigError from the
  // shared job config): true when every rank of the world calls this within `seconds` (they all failed; one
  // report and a normal exit suffice), false when some rank does not (it is elsewhere, e.g. in a collective
  // waiting for this one: report on this rank and abort()). Runs on its own communicator, so it never matches
  // a collective of the job.
  bool every_rank_fails(double seconds);

 private:
  struct Agreement;
  std::unique_ptr<Agreement> agreement_;  // the communicator every_rank_fails() uses
  bool owns_mpi_ = true;
  int world_rank_ = 0;
  int world_size_ = 1;
  int thread_level_ = 0;
};

}  // namespace tessera

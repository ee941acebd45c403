// MPI initialization, finalization and abort.
#include "parallel/mpi_environment.h"

#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/check.h"
#include "parallel/mpi_check.h"
#include "parallel/peer_processes.h"

namespace tessera {

struct MpiEnvironment::Agreement {
  MPI_Comm comm = MPI_COMM_NULL;
};

MpiEnvironment::MpiEnvironment(int* argc, char*** argv) : agreement_(std::make_unique<Agreement>()) {
  int initialized = 0;
  MPI_CHECK(MPI_Initialized(&initialized));
  TS_CHECK(!initialized, CommError,
           "MPI is already initialized: create exactly one MpiEnvironment per process, before any MPI call");
  // Most MPI libraries abort inside MPI_Init_thread on failure; MPI_CHECK covers those that return an error.
  MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &thread_level_));
  if (thread_level_ < MPI_THREAD_FUNNELED) {
    MPI_Finalize();
    throw CommError(str_cat("the MPI library offers thread level ", thread_level_,
                            ", below MPI_THREAD_FUNNELED; use an MPI built with thread support"));
  }
  // Communicators created from the world (dup, split) inherit its error handler.
  MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_size_));
  // Every rank's host and pid, for the errors that name a missing peer (Note [Peer diagnosis]).
  constexpr int kHostBytes = 256;
  struct Entry {
    char host[kHostBytes];
    int32_t pid;
  };
  Entry mine{};
  ::gethostname(mine.host, kHostBytes - 1);
  mine.pid = static_cast<int32_t>(::getpid());
  std::vector<Entry> all(static_cast<size_t>(world_size_));
  MPI_CHECK(MPI_Allgather(&mine, sizeof(Entry), MPI_BYTE, all.data(), sizeof(Entry), MPI_BYTE, MPI_COMM_WORLD));
  std::vector<PeerProcess> peers;
  for (const Entry& e : all) peers.push_back({std::string(e.host, strnlen(e.host, kHostBytes)), e.pid});
  set_peer_processes(std::move(peers), world_rank_);
  MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &agreement_->comm));
}

MpiEnvironment::MpiEnvironment(MpiEnvironment&& other) noexcept
    : agreement_(std::move(other.agreement_)),
      owns_mpi_(other.owns_mpi_),
      world_rank_(other.world_rank_),
      world_size_(other.world_size_),
      thread_level_(other.thread_level_) {
  other.owns_mpi_ = false;
}

MpiEnvironment::~MpiEnvironment() {
  if (!owns_mpi_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (agreement_ && agreement_->comm != MPI_COMM_NULL) MPI_Comm_free(&agreement_->comm);
  MPI_Finalize();
}

bool MpiEnvironment::every_rank_fails(double seconds) {
  if (world_size_ == 1) return true;
  MPI_Request request = MPI_REQUEST_NULL;
  if (MPI_Ibarrier(agreement_->comm, &request) != MPI_SUCCESS) return false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    int done = 0;
    if (MPI_Test(&request, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return false;
    if (done) return true;
    ::usleep(10000);
  }
  return false;  // the request stays pending: the caller aborts
}

void MpiEnvironment::abort(int code) {
  // The launcher forwards this rank's output through a pipe that MPI_Abort's teardown may close before reading
  // it: give it a moment to carry the error that led here.
  ::usleep(500000);
  MPI_Abort(MPI_COMM_WORLD, code);
  // MPI_Abort is not required to kill the caller before returning.
  std::_Exit(code);
}

}  // namespace tessera

// Where every rank's process is (host name and PID), to say in a communication error what became of a peer.
//
// Note [Peer diagnosis]. A timed-out or failed operation knows which world ranks it waited for, not why they
// did not answer. At start-up the ranks exchange (host, pid) once; when an operation fails, each peer that
// runs on this rank's host is looked up in /proc: a process that no longer exists died (killed, crashed), one
// in state T is stopped (SIGSTOP, a debugger), a zombie has exited. Peers on other hosts cannot be checked from
// here; the error names their host so that the user knows where to look.
#pragma once

#include <string>
#include <vector>

namespace tessera {

struct PeerProcess {
  std::string host;
  int pid = 0;
};

// Records every world rank's process (index: world rank) and this process's world rank. Called once after
// MPI initialization (MpiEnvironment does it); before that, peer_report() says nothing.
void set_peer_processes(std::vector<PeerProcess> by_world_rank, int my_world_rank);

// What is known of world rank r's process: "world rank 1 (pid 4242 on node7) no longer exists (it died or
// was killed)", "... is stopped (SIGSTOP or a debugger)", "... has exited", "... is running", or
// "world rank 1 runs on node8 (pid 4242), another host: check it there". "" when the table is not set.
std::string peer_process_status(int world_rank);

// For an error message: "; " and the status of every rank of world_ranks (this one left out) that is not
// simply running, or, when all that could be checked are running, nothing. Ranks on other hosts are
// listed by host (at most a few).
std::string peer_report(const std::vector<int>& world_ranks);

}  // namespace tessera

// The peer process table and its /proc lookups (Note [Peer diagnosis] in the header).
#include "parallel/peer_processes.h"

#include <signal.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <utility>

#include "core/check.h"

namespace tessera {

namespace {

struct PeerTable {
  std::vector<PeerProcess> peers;
  int me = -1;
};

PeerTable& table() {
  static PeerTable t;
  return t;
}

enum class Local { kRunning, kGone, kStopped, kExited, kRemote, kUnknown };

Local look_up(const PeerProcess& peer, const PeerProcess& me) {
  if (peer.host != me.host) return Local::kRemote;
  if (peer.pid <= 0) return Local::kUnknown;
  if (::kill(peer.pid, 0) != 0 && errno == ESRCH) return Local::kGone;
  // /proc/PID/stat: "pid (comm) state ..."; comm may hold spaces and parentheses, so read after the last ')'.
  std::ifstream in("/proc/" + std::to_string(peer.pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return Local::kUnknown;
  const char state = stat[close + 2];
  if (state == 'T' || state == 't') return Local::kStopped;
  if (state == 'Z' || state == 'X') return Local::kExited;
  return Local::kRunning;
}

std::string describe(int rank, const PeerProcess& peer, Local status) {
  const std::string who = str_cat("world rank ", rank, " (pid ", peer.pid, " on ", peer.host, ")");
  switch (status) {
    case Local::kGone:
      return who + " no longer exists (it died or was killed)";
    case Local::kStopped:
      return who + " is stopped (SIGSTOP, or a debugger holds it)";
    case Local::kExited:
      return who + " has exited";
    case Local::kRunning:
      return who + " is running";
    case Local::kRemote:
      return str_cat("world rank ", rank, " runs on ", peer.host, " (pid ", peer.pid, "), another host: check it there");
    case Local::kUnknown:
      break;
  }
  return who;
}

}  // namespace

void set_peer_processes(std::vector<PeerProcess> by_world_rank, int my_world_rank) {
  table().peers = std::move(by_world_rank);
  table().me = my_world_rank;
}

std::string peer_process_status(int world_rank) {
  const PeerTable& t = table();
  if (t.me < 0 || world_rank < 0 || world_rank >= static_cast<int>(t.peers.size())) return "";
  const PeerProcess& peer = t.peers[world_rank];
  return describe(world_rank, peer, look_up(peer, t.peers[t.me]));
}

std::string peer_report(const std::vector<int>& world_ranks) {
  const PeerTable& t = table();
  if (t.me < 0) return "";
  std::vector<std::string> findings;
  std::vector<int> remote;
  for (int rank : world_ranks) {
    if (rank == t.me || rank < 0 || rank >= static_cast<int>(t.peers.size())) continue;
    const Local status = look_up(t.peers[rank], t.peers[t.me]);
    if (status == Local::kRemote) {
      remote.push_back(rank);
    } else if (status != Local::kRunning && status != Local::kUnknown) {
      findings.push_back(describe(rank, t.peers[rank], status));
    }
  }
  constexpr size_t kMaxRemote = 4;
  for (size_t i = 0; i < remote.size() && i < kMaxRemote; ++i) {
    findings.push_back(describe(remote[i], t.peers[remote[i]], Local::kRemote));
  }
  if (remote.size() > kMaxRemote) findings.push_back(str_cat("and ", remote.size() - kMaxRemote, " more on other hosts"));
  if (findings.empty()) return "";
  std::string out;
  for (const std::string& f : findings) out += "; " + f;
  return out;
}

}  // namespace tessera

// What a communication error says about a peer (Note [Peer diagnosis] in parallel/peer_processes.h): a
// process on this host that died, one that is stopped, one that is running, and one on another host.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "parallel/peer_processes.h"

namespace tessera {
namespace {

std::string host_name() {
  char host[256] = "";
  ::gethostname(host, sizeof(host) - 1);
  return host;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(PeerProcesses, SaysWhichPeerDiedIsStoppedOrRunsElsewhere) {
  const std::string host = host_name();
  // A child that has died and been reaped, so its pid names no process.
  const pid_t dead = ::fork();
  ASSERT_GE(dead, 0);
  if (dead == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(dead, nullptr, 0), dead);
  // A child stopped by SIGSTOP.
  const pid_t stopped = ::fork();
  ASSERT_GE(stopped, 0);
  if (stopped == 0) {
    ::raise(SIGSTOP);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(stopped, &status, WUNTRACED), stopped);
  ASSERT_TRUE(WIFSTOPPED(status));

  set_peer_processes({{host, static_cast<int>(::getpid())}, {host, static_cast<int>(dead)},
                      {host, static_cast<int>(stopped)}, {"node-elsewhere", 4242}},
                     0);
  EXPECT_EQ(peer_process_status(1), "world rank 1 (pid " + std::to_string(dead) + " on " + host +
                                        ") no longer exists (it died or was killed)");
  EXPECT_EQ(peer_process_status(2), "world rank 2 (pid " + std::to_string(stopped) + " on " + host +
                                        ") is stopped (SIGSTOP, or a debugger holds it)");
  EXPECT_TRUE(contains(peer_process_status(0), "is running"));
  EXPECT_EQ(peer_process_status(3), "world rank 3 runs on node-elsewhere (pid 4242), another host: check it there");

  const std::string report = peer_report({0, 1, 2, 3});
  EXPECT_TRUE(contains(report, "; world rank 1 (pid")) << report;
  EXPECT_TRUE(contains(report, "; world rank 2 (pid")) << report;
  EXPECT_TRUE(contains(report, "; world rank 3 runs on node-elsewhere")) << report;
  EXPECT_FALSE(contains(report, "world rank 0")) << report;  // this process
  EXPECT_EQ(peer_report({0}), "");

  ::kill(stopped, SIGKILL);
  ::waitpid(stopped, nullptr, 0);
  set_peer_processes({}, -1);
}

}  // namespace
}  // namespace tessera

// SIGTERM/SIGINT/SIGUSR1 handlers that only record the signal.
#include "launcher/common/stop_signal.h"

#include <csignal>

namespace tessera {

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

void record_signal(int signal_number) {
  if (g_stop_signal == 0) g_stop_signal = signal_number;
}

}  // namespace

void install_stop_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = record_signal;
  sigemptyset(&action.sa_mask);
  // SA_RESETHAND: the second signal takes the default action (terminates). SA_RESTART: a blocking system
  // call (a file write) continues instead of failing with EINTR.
  action.sa_flags = SA_RESETHAND | SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
}

int stop_signal_received() { return g_stop_signal; }

void clear_stop_signal() {
  g_stop_signal = 0;
  install_stop_signal_handlers();
}

const char* stop_signal_name(int signal_number) {
  switch (signal_number) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGUSR1:
      return "SIGUSR1";
    default:
      return "a stop signal";
  }
}

}  // namespace tessera

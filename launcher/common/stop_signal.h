// Graceful stop on SIGTERM, SIGINT or SIGUSR1 (what Slurm, Kubernetes and a user's Ctrl-C send; SIGUSR1 is the
// warning a Slurm job script asks for with `#SBATCH --signal=USR1@120`, sent before the time limit while the
// job may still save): the first signal only sets a flag that the training loop reads between steps (the ranks
// agree on it, save a checkpoint and exit kExitStoppedBySignal); the handler then resets to the default action,
// so a second signal ends the process at once.
//
// The flag is process state (there is one set of signal handlers per process); nothing here calls MPI.
#pragma once

namespace tessera {

// Installs the handlers for SIGTERM, SIGINT and SIGUSR1. Idempotent; call from the main thread.
void install_stop_signal_handlers();

// The number of the first stop signal received since install (or the last clear), 0 if none.
// Async-signal-safe to read; any thread.
int stop_signal_received();

// Forgets a received signal and re-arms the handlers (tests).
void clear_stop_signal();

// "SIGTERM", "SIGINT", "SIGUSR1", or "a stop signal".
const char* stop_signal_name(int signal_number);

}  // namespace tessera

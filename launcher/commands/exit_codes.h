// The exit codes of the `tessera` command, distinct so that a job script (or a cluster scheduler's epilog) can
// tell what to do next. Printed in `tessera --help` and listed in README.md.
#pragma once

namespace tessera {

// The command did what was asked (train: every step of train.steps ran).
constexpr int kExitSuccess = 0;
// A failed run: a data, checkpoint, communication or runtime error (verify: FAIL).
constexpr int kExitFailure = 1;
// A usage or config error, detected before any work started; nothing in the run directory changed.
constexpr int kExitConfigError = 2;
// train only: stopped by SIGTERM, SIGINT or SIGUSR1 before its last step, after saving its state (checkpoint.save_on_exit)
// — requeue the job with `--resume auto` and it continues.
constexpr int kExitStoppedBySignal = 3;

}  // namespace tessera

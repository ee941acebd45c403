// The command line of `tessera ARGS` as a user runs it, for the tests that drive the binary: under mpirun for
// several ranks, with the environment these machines need (mpirun as root, one OpenMP thread per rank,
// passive OpenMP waits). TESSERA_BINARY and, for several ranks, TESSERA_MPIEXEC come from the test's target.
#pragma once

#include <string>

#include "core/check.h"

namespace tessera::testing {

inline const std::string kCliEnvironment =
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE ";

#if defined(TESSERA_BINARY) && defined(TESSERA_MPIEXEC)
inline std::string tessera_cli(const std::string& args, int ranks) {
  const std::string launcher = ranks == 1 ? "" : str_cat(TESSERA_MPIEXEC, " --oversubscribe -np ", ranks, " ");
  return kCliEnvironment + launcher + TESSERA_BINARY + " " + args;
}
#endif

}  // namespace tessera::testing

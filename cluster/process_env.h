// The process's place in the job, read from the launcher's environment (Open MPI, Slurm) and the host.
//
// This is the only code that reads OMPI_* / SLURM_* variables; everything else receives a ProcessEnv.
#pragma once

#include <string>

namespace tessera {

struct ProcessEnv {
  int world_rank = 0;
  int world_size = 1;
  int local_rank = 0;  // rank among the processes on this host
  int local_size = 1;  // processes on this host
  std::string host;

  // "rank 3/8 on node7"
  std::string label() const;
};

// Reads rank and size from the launcher's environment (OMPI_COMM_WORLD_*, then SLURM_*/PMI_*), falling back
// to a single process. world_rank/world_size are later confirmed against MPI by the caller.
ProcessEnv read_process_env();

// Cores available to this process divided by local_size, at least 1: the CPU threads a rank should use when
// the user did not say.
int default_threads_per_rank(const ProcessEnv& env);

}  // namespace tessera

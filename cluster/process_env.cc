// Reading the launcher's environment.
#include "cluster/process_env.h"

#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "core/check.h"

namespace tessera {

namespace {

int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  char* end = nullptr;
  long parsed = std::strtol(value, &end, 10);
  if (*end != '\0' || parsed < 0) return fallback;
  return static_cast<int>(parsed);
}

// The first variable of names that is set, else fallback.
int first_env_int(std::initializer_list<const char*> names, int fallback) {
  for (const char* name : names) {
    int value = env_int(name, -1);
    if (value >= 0) return value;
  }
  return fallback;
}

}  // namespace

std::string ProcessEnv::label() const {
  return str_cat("rank ", world_rank, "/", world_size, " on ", host);
}

ProcessEnv read_process_env() {
  ProcessEnv env;
  env.world_rank = first_env_int({"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID", "PMI_RANK"}, 0);
  env.world_size = first_env_int({"OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS", "PMI_SIZE"}, 1);
  env.local_rank = first_env_int({"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID"}, 0);
  env.local_size = first_env_int({"OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", "MPI_LOCALNRANKS"}, 1);
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  env.host = host[0] ? host : "unknown-host";
  return env;
}

int default_threads_per_rank(const ProcessEnv& env) {
  cpu_set_t set;
  int cores = 0;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = CPU_COUNT(&set);
  if (cores <= 0) cores = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  // With several ranks per host each may be bound to a single core by mpirun; the host's cores are then
  // the better measure.
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  if (env.local_size > 1 && online > cores) cores = static_cast<int>(online);
  int threads = cores / (env.local_size > 0 ? env.local_size : 1);
  return threads > 0 ? threads : 1;
}

}  // namespace tessera

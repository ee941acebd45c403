// Reading the launcher's environment.
#include "cluster/process_env.h"

#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "core/check.h"

extern char** environ;

namespace tessera {

namespace {

// The variable's value as a non-negative integer, else fallback (unset, empty, malformed or negative).
long long table_int(const std::map<std::string, std::string>& variables, const char* name, long long fallback) {
  const auto it = variables.find(name);
  if (it == variables.end() || it->second.empty()) return fallback;
  char* end = nullptr;
  const long long parsed = std::strtoll(it->second.c_str(), &end, 10);
  if (*end != '\0' || parsed < 0) return fallback;
  return parsed;
}

// The first variable of names that is set to a non-negative integer, else fallback.
int first_int(const std::map<std::string, std::string>& variables, std::initializer_list<const char*> names,
              int fallback) {
  for (const char* name : names) {
    const long long value = table_int(variables, name, -1);
    if (value >= 0) return static_cast<int>(value);
  }
  return fallback;
}

std::string table_string(const std::map<std::string, std::string>& variables, const char* name) {
  const auto it = variables.find(name);
  return it == variables.end() ? "" : it->second;
}

const char* plural(int n, const char* one, const char* many) { return n == 1 ? one : many; }

// The GPUs part of the launcher line: what this rank may see, when someone (Slurm, the user) said.
std::string gpus_clause(const ProcessEnv& env) {
  if (!env.cuda_visible_devices_set && env.slurm_step_gpus.empty()) return "";
  std::string clause = " | GPUs: ";
  if (env.cuda_visible_devices_set) {
    clause += str_cat("CUDA_VISIBLE_DEVICES=", env.cuda_visible_devices);
    if (!env.slurm_step_gpus.empty()) clause += str_cat(", SLURM_STEP_GPUS=", env.slurm_step_gpus);
  } else {
    clause += str_cat("SLURM_STEP_GPUS=", env.slurm_step_gpus, " (CUDA_VISIBLE_DEVICES unset: all visible)");
  }
  return clause + str_cat(" (rank ", env.world_rank, "; each rank takes local rank % visible GPUs)");
}

}  // namespace

std::string ProcessEnv::label() const { return str_cat("rank ", world_rank, "/", world_size, " on ", host); }

std::string ProcessEnv::launcher_line() const {
  const std::string layout = str_cat(world_size, " ", plural(world_size, "task", "tasks"), " on ", num_nodes, " ",
                                     plural(num_nodes, "node", "nodes"));
  std::string line;
  switch (launcher) {
    case Launcher::kSrun:
      line = str_cat("launcher: slurm srun (job ", slurm_job_id, ", step ", slurm_step_id, ", ", layout,
                     has_pmix ? ", PMIx" : ", no PMIx",
                     slurm_restart_count > 0 ? str_cat(", requeued ", slurm_restart_count, "x") : "", ")");
      break;
    case Launcher::kMpirun:
      line = str_cat("launcher: mpirun (Open MPI, ",
                     str_cat(world_size, " ", plural(world_size, "rank", "ranks"), " on ", num_nodes, " ",
                             plural(num_nodes, "node", "nodes")),
                     slurm_job_id >= 0 ? str_cat(", inside Slurm job ", slurm_job_id) : "", ")");
      break;
    case Launcher::kNone:
      line = str_cat("launcher: none (", world_size, " ", plural(world_size, "process", "processes"),
                     slurm_job_id >= 0 ? str_cat(", in Slurm job ", slurm_job_id, " outside srun") : "", ")");
      break;
  }
  return line + gpus_clause(*this);
}

ProcessEnv process_env_from(const std::map<std::string, std::string>& variables, const std::string& host) {
  ProcessEnv env;
  env.host = host.empty() ? "unknown-host" : host;
  env.slurm_job_id = table_int(variables, "SLURM_JOB_ID", -1);
  env.slurm_restart_count = static_cast<int>(table_int(variables, "SLURM_RESTART_COUNT", 0));
  env.has_pmix = table_int(variables, "PMIX_RANK", -1) >= 0;
  env.cuda_visible_devices_set = variables.count("CUDA_VISIBLE_DEVICES") > 0;
  env.cuda_visible_devices = table_string(variables, "CUDA_VISIBLE_DEVICES");
  env.slurm_step_gpus = table_string(variables, "SLURM_STEP_GPUS");
  const long long step_id = table_int(variables, "SLURM_STEP_ID", -1);

  if (table_int(variables, "OMPI_COMM_WORLD_SIZE", -1) >= 0) {
    env.launcher = Launcher::kMpirun;
    env.world_rank = first_int(variables, {"OMPI_COMM_WORLD_RANK", "PMIX_RANK"}, 0);
    env.world_size = first_int(variables, {"OMPI_COMM_WORLD_SIZE"}, 1);
    env.local_rank = first_int(variables, {"OMPI_COMM_WORLD_LOCAL_RANK"}, 0);
    env.local_size = first_int(variables, {"OMPI_COMM_WORLD_LOCAL_SIZE"}, 1);
    // Open MPI names no node count; with as many ranks on each node as on this one, it is their ratio.
    if (env.local_size > 0 && env.world_size % env.local_size == 0) env.num_nodes = env.world_size / env.local_size;
  } else if (step_id >= 0 && table_int(variables, "SLURM_PROCID", -1) >= 0) {
    env.launcher = Launcher::kSrun;
    env.slurm_step_id = step_id;
    env.world_rank = first_int(variables, {"SLURM_PROCID"}, 0);
    env.world_size = first_int(variables, {"SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"}, 1);
    env.local_rank = first_int(variables, {"SLURM_LOCALID"}, 0);
    env.num_nodes = first_int(variables, {"SLURM_STEP_NUM_NODES", "SLURM_NNODES"}, 1);
    const int node_id = first_int(variables, {"SLURM_NODEID"}, 0);
    std::string per_node = table_string(variables, "SLURM_STEP_TASKS_PER_NODE");
    if (per_node.empty()) per_node = table_string(variables, "SLURM_TASKS_PER_NODE");
    const int local = slurm_tasks_on_node(per_node, node_id);
    env.local_size = local > 0 ? local : first_int(variables, {"SLURM_NTASKS_PER_NODE"}, 1);
  } else {
    // No launcher we know; a PMI-only one (MPICH's hydra) still gives rank and size.
    env.world_rank = first_int(variables, {"PMIX_RANK", "PMI_RANK"}, 0);
    env.world_size = first_int(variables, {"PMI_SIZE"}, 1);
    env.local_rank = first_int(variables, {"MPI_LOCALRANKID"}, 0);
    env.local_size = first_int(variables, {"MPI_LOCALNRANKS"}, 1);
  }
  if (env.local_size < 1) env.local_size = 1;
  if (env.num_nodes < 1) env.num_nodes = 1;
  return env;
}

ProcessEnv read_process_env() {
  std::map<std::string, std::string> variables;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const char* equals = std::strchr(*entry, '=');
    if (equals == nullptr) continue;
    std::string name(*entry, equals - *entry);
    if (name.rfind("OMPI_COMM_WORLD_", 0) == 0 || name.rfind("SLURM_", 0) == 0 || name.rfind("PMI", 0) == 0 ||
        name.rfind("MPI_LOCAL", 0) == 0 || name == "CUDA_VISIBLE_DEVICES") {
      variables.emplace(std::move(name), equals + 1);
    }
  }
  char host[256] = {0};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return process_env_from(variables, host);
}

std::string launcher_problem(const ProcessEnv& env) {
  if (env.launcher == Launcher::kSrun && !env.has_pmix) {
    return str_cat("srun started this task (Slurm job ", env.slurm_job_id, ", step ", env.slurm_step_id,
                   ") without PMIx, and Open MPI can join an srun job only through PMIx: run `srun --mpi=pmix ...` "
                   "(or set MpiDefault=pmix in slurm.conf; `srun --mpi=list` shows what this Slurm offers), or "
                   "start the ranks with mpirun inside the allocation (salloc/sbatch, then `mpirun tessera ...`).");
  }
  return "";
}

std::string world_size_problem(const ProcessEnv& env, int mpi_world_size) {
  if (env.launcher == Launcher::kNone || env.world_size == mpi_world_size) return "";
  return str_cat(env.launcher == Launcher::kSrun ? "srun" : "mpirun", " started ", env.world_size,
                 " tasks but MPI's world has ", mpi_world_size,
                 " rank(s): each task would train alone. Check that MPI and the launcher match ",
                 env.launcher == Launcher::kSrun ? "(`srun --mpi=pmix`, the Open MPI this binary was built with)"
                                                 : "(the mpirun of the Open MPI this binary was built with)",
                 ".");
}

int slurm_tasks_on_node(const std::string& tasks_per_node, int node_id) {
  // Comma-separated entries "N" or "N(xK)": N tasks on each of the next K nodes.
  if (tasks_per_node.empty() || node_id < 0) return -1;
  size_t pos = 0;
  long long first_node = 0;
  while (pos < tasks_per_node.size()) {
    size_t end = tasks_per_node.find(',', pos);
    if (end == std::string::npos) end = tasks_per_node.size();
    const std::string entry = tasks_per_node.substr(pos, end - pos);
    char* rest = nullptr;
    const long tasks = std::strtol(entry.c_str(), &rest, 10);
    if (rest == entry.c_str() || tasks <= 0) return -1;
    long repeat = 1;
    if (*rest != '\0') {
      if (std::strncmp(rest, "(x", 2) != 0) return -1;
      char* close = nullptr;
      repeat = std::strtol(rest + 2, &close, 10);
      if (close == rest + 2 || repeat <= 0 || std::strcmp(close, ")") != 0) return -1;
    }
    if (node_id < first_node + repeat) return static_cast<int>(tasks);
    first_node += repeat;
    pos = end + 1;
  }
  return -1;
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

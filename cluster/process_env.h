// The process's place in the job, read from the launcher's environment (Open MPI's mpirun, Slurm's srun) and
// the host.
//
// This is the only code that reads OMPI_* / PMIX_* / SLURM_* / CUDA_VISIBLE_DEVICES; everything else receives a
// ProcessEnv. Which launcher started the process decides where rank, local rank and the node count come from:
//   mpirun  OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE}. Wins over SLURM_*: under `salloc ... mpirun`, the
//           ranks inherit the allocation's SLURM_* and those of the srun step that started Open MPI's daemons.
//   srun    SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID, SLURM_STEP_NUM_NODES, and the local size
//           from SLURM_STEP_TASKS_PER_NODE ("4", "2(x3),1"); recognised by SLURM_STEP_ID, which only srun sets
//           (a batch script's own shell has SLURM_PROCID=0 and the job's SLURM_NTASKS, but no step id). Open MPI
//           joins a job started by srun only through PMIx (`srun --mpi=pmix`, PMIX_RANK in the environment).
//   none    one process, or a launcher that left none of these.
// GPU binding: a rank uses GPU (local rank % visible GPUs) among those CUDA_VISIBLE_DEVICES lets it see; with
// `--gpus-per-task=1` or `--gpu-bind=single:1` Slurm gives each task its own, and it is GPU 0 of one.
#pragma once

#include <map>
#include <string>

namespace tessera {

enum class Launcher { kNone, kMpirun, kSrun };

struct ProcessEnv {
  int world_rank = 0;
  int world_size = 1;
  int local_rank = 0;  // rank among the processes on this host
  int local_size = 1;  // processes on this host
  int num_nodes = 1;   // hosts of the job (or Slurm step); 1 when the launcher does not say
  std::string host;

  Launcher launcher = Launcher::kNone;
  // Slurm: the job and step (srun), -1 when not in a Slurm job / not in a step; the job's requeue count.
  long long slurm_job_id = -1;
  long long slurm_step_id = -1;
  int slurm_restart_count = 0;
  bool has_pmix = false;             // PMIX_RANK is set: MPI can join the launcher's job
  std::string cuda_visible_devices;  // as set, "" when unset
  bool cuda_visible_devices_set = false;
  std::string slurm_step_gpus;  // SLURM_STEP_GPUS (the GPUs Slurm gave this step), "" when unset

  // "rank 3/8 on node7"
  std::string label() const;
  // What rank 0 prints as a run's first line, e.g.
  // "launcher: slurm srun (job 12, step 0, 4 tasks on 1 node, PMIx) | GPUs: CUDA_VISIBLE_DEVICES=0,1 (rank 0)"
  // "launcher: mpirun (Open MPI, 2 ranks on 1 node)", "launcher: none (1 process)".
  std::string launcher_line() const;
};

// Reads the launcher's environment (see the top of this file); host from gethostname. world_rank/world_size are
// later confirmed against MPI by the caller.
ProcessEnv read_process_env();

// The same from a table of variables (unit tests; read_process_env passes the real environment).
ProcessEnv process_env_from(const std::map<std::string, std::string>& variables, const std::string& host);

// "" when MPI can start in this environment; else what is wrong and what to do (srun started the task without
// PMIx, where Open MPI can only fail with a message about how it was built). Pure.
std::string launcher_problem(const ProcessEnv& env);

// The problem when MPI's world disagrees with the launcher's count of tasks (each task of an srun started
// without a working PMI becomes a world of its own and would train alone), else "". Pure.
std::string world_size_problem(const ProcessEnv& env, int mpi_world_size);

// The processes per node of a Slurm task-count list ("4", "2(x3),1": 2 on each of nodes 0-2, 1 on node 3) for
// node `node_id`; -1 when the list is malformed or has no such node. Pure.
int slurm_tasks_on_node(const std::string& tasks_per_node, int node_id);

// Cores available to this process divided by local_size, at least 1: the CPU threads a rank should use when
// the user did not say.
int default_threads_per_rank(const ProcessEnv& env);

}  // namespace tessera

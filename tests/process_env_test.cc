// Launcher detection from environment tables: what mpirun, srun (with and without PMIx), a Slurm batch script
// and `salloc ... mpirun` leave in a rank's environment (the variables as Open MPI 4.1 and Slurm 22.05 set
// them), and the rank, local rank, node count and first line Tessera takes from it.
#include "cluster/process_env.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace tessera {
namespace {

using Table = std::map<std::string, std::string>;

// Task 5 of `srun -N 2 -n 8 --gpus-per-task=1 --mpi=pmix` (job 12, step 0), on the second node.
Table srun_task5() {
  return {{"SLURM_JOB_ID", "12"},
          {"SLURM_STEP_ID", "0"},
          {"SLURM_PROCID", "5"},
          {"SLURM_LOCALID", "1"},
          {"SLURM_NODEID", "1"},
          {"SLURM_NTASKS", "8"},
          {"SLURM_STEP_NUM_TASKS", "8"},
          {"SLURM_STEP_NUM_NODES", "2"},
          {"SLURM_NNODES", "2"},
          {"SLURM_STEP_TASKS_PER_NODE", "4(x2)"},
          {"SLURM_TASKS_PER_NODE", "4(x2)"},
          {"PMIX_RANK", "5"},
          {"CUDA_VISIBLE_DEVICES", "1"},
          {"SLURM_STEP_GPUS", "1"}};
}

TEST(ProcessEnv, NoLauncherIsOneProcess) {
  const ProcessEnv env = process_env_from({}, "node7");
  EXPECT_EQ(env.launcher, Launcher::kNone);
  EXPECT_EQ(env.world_rank, 0);
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(env.local_size, 1);
  EXPECT_EQ(env.host, "node7");
  EXPECT_EQ(env.launcher_line(), "launcher: none (1 process)");
  EXPECT_EQ(launcher_problem(env), "");
}

TEST(ProcessEnv, MpirunGivesRanksFromOmpiVariables) {
  const ProcessEnv env = process_env_from({{"OMPI_COMM_WORLD_RANK", "3"},
                                           {"OMPI_COMM_WORLD_SIZE", "8"},
                                           {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                           {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
                                           {"PMIX_RANK", "3"}},
                                          "n1");
  EXPECT_EQ(env.launcher, Launcher::kMpirun);
  EXPECT_EQ(env.world_rank, 3);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_size, 2);
  EXPECT_EQ(env.num_nodes, 4);
  EXPECT_EQ(env.launcher_line(), "launcher: mpirun (Open MPI, 8 ranks on 4 nodes)");
}

TEST(ProcessEnv, SrunWithPmixGivesRanksLocalRankAndNodesFromSlurm) {
  const ProcessEnv env = process_env_from(srun_task5(), "gpu2");
  EXPECT_EQ(env.launcher, Launcher::kSrun);
  EXPECT_EQ(env.world_rank, 5);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_size, 4);
  EXPECT_EQ(env.num_nodes, 2);
  EXPECT_EQ(env.slurm_job_id, 12);
  EXPECT_EQ(env.slurm_step_id, 0);
  EXPECT_TRUE(env.has_pmix);
  EXPECT_EQ(env.launcher_line(),
            "launcher: slurm srun (job 12, step 0, 8 tasks on 2 nodes, PMIx) | GPUs: CUDA_VISIBLE_DEVICES=1, "
            "SLURM_STEP_GPUS=1 (rank 5; each rank takes local rank % visible GPUs)");
  EXPECT_EQ(launcher_problem(env), "");
  EXPECT_EQ(world_size_problem(env, 8), "");
}

TEST(ProcessEnv, SrunStepSmallerThanTheAllocationCountsTheStepsTasks) {
  // `salloc -n 8` then `srun -n 2`: the step's counts, not the job's.
  Table table = {{"SLURM_JOB_ID", "40"},
                 {"SLURM_STEP_ID", "3"},
                 {"SLURM_PROCID", "1"},
                 {"SLURM_LOCALID", "1"},
                 {"SLURM_NODEID", "0"},
                 {"SLURM_NTASKS", "2"},
                 {"SLURM_STEP_NUM_TASKS", "2"},
                 {"SLURM_STEP_NUM_NODES", "1"},
                 {"SLURM_NNODES", "2"},
                 {"SLURM_STEP_TASKS_PER_NODE", "2"},
                 {"SLURM_TASKS_PER_NODE", "4(x2)"},
                 {"PMIX_RANK", "1"},
                 {"SLURM_RESTART_COUNT", "2"}};
  const ProcessEnv env = process_env_from(table, "n1");
  EXPECT_EQ(env.world_size, 2);
  EXPECT_EQ(env.local_size, 2);
  EXPECT_EQ(env.num_nodes, 1);
  EXPECT_EQ(env.slurm_restart_count, 2);
  EXPECT_EQ(env.launcher_line(), "launcher: slurm srun (job 40, step 3, 2 tasks on 1 node, PMIx, requeued 2x)");
}

TEST(ProcessEnv, SrunWithoutPmixIsAProblemBeforeMpiStarts) {
  Table table = srun_task5();
  table.erase("PMIX_RANK");
  const ProcessEnv env = process_env_from(table, "gpu2");
  EXPECT_EQ(env.launcher, Launcher::kSrun);
  EXPECT_FALSE(env.has_pmix);
  const std::string problem = launcher_problem(env);
  EXPECT_NE(problem.find("srun --mpi=pmix"), std::string::npos) << problem;
  EXPECT_NE(problem.find("job 12, step 0"), std::string::npos) << problem;
}

TEST(ProcessEnv, MpirunInsideASlurmAllocationIsMpirun) {
  // mpirun in `salloc -N 2`: its ranks inherit the allocation's variables and those of the srun step that
  // started Open MPI's daemons (one task per node), which must not be taken for the ranks' own.
  const ProcessEnv env = process_env_from({{"SLURM_JOB_ID", "77"},
                                           {"SLURM_STEP_ID", "0"},
                                           {"SLURM_PROCID", "1"},
                                           {"SLURM_LOCALID", "0"},
                                           {"SLURM_NTASKS", "2"},
                                           {"SLURM_TASKS_PER_NODE", "1(x2)"},
                                           {"OMPI_COMM_WORLD_RANK", "6"},
                                           {"OMPI_COMM_WORLD_SIZE", "8"},
                                           {"OMPI_COMM_WORLD_LOCAL_RANK", "2"},
                                           {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                                           {"PMIX_RANK", "6"}},
                                          "n2");
  EXPECT_EQ(env.launcher, Launcher::kMpirun);
  EXPECT_EQ(env.world_rank, 6);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 2);
  EXPECT_EQ(env.local_size, 4);
  EXPECT_EQ(env.launcher_line(), "launcher: mpirun (Open MPI, 8 ranks on 2 nodes, inside Slurm job 77)");
  EXPECT_EQ(launcher_problem(env), "");
}

TEST(ProcessEnv, ABatchScriptWithoutSrunIsOneProcess) {
  // `tessera train` run straight from an sbatch script: SLURM_PROCID=0 and the job's task count, no step.
  const ProcessEnv env = process_env_from({{"SLURM_JOB_ID", "9"},
                                           {"SLURM_PROCID", "0"},
                                           {"SLURM_LOCALID", "0"},
                                           {"SLURM_NTASKS", "4"},
                                           {"SLURM_TASKS_PER_NODE", "4"}},
                                          "n1");
  EXPECT_EQ(env.launcher, Launcher::kNone);
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(env.launcher_line(), "launcher: none (1 process, in Slurm job 9 outside srun)");
  EXPECT_EQ(world_size_problem(env, 1), "");
}

TEST(ProcessEnv, MpiWorldOfAnotherSizeThanTheLaunchersIsAProblem) {
  const ProcessEnv env = process_env_from(srun_task5(), "gpu2");
  const std::string problem = world_size_problem(env, 1);
  EXPECT_NE(problem.find("srun started 8 tasks but MPI's world has 1"), std::string::npos) << problem;
}

TEST(ProcessEnv, GpusVisibleToEveryTaskAreNamed) {
  Table table = srun_task5();
  table["CUDA_VISIBLE_DEVICES"] = "0,1,2,3";
  table["SLURM_STEP_GPUS"] = "0,1,2,3";
  table["SLURM_PROCID"] = "0";
  EXPECT_EQ(process_env_from(table, "g").launcher_line(),
            "launcher: slurm srun (job 12, step 0, 8 tasks on 2 nodes, PMIx) | GPUs: CUDA_VISIBLE_DEVICES=0,1,2,3, "
            "SLURM_STEP_GPUS=0,1,2,3 (rank 0; each rank takes local rank % visible GPUs)");
  table.erase("CUDA_VISIBLE_DEVICES");
  EXPECT_NE(process_env_from(table, "g").launcher_line().find("CUDA_VISIBLE_DEVICES unset: all visible"),
            std::string::npos);
}

TEST(ProcessEnv, MalformedNumbersFallBack) {
  const ProcessEnv env = process_env_from(
      {{"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_RANK", "x"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", ""}}, "");
  EXPECT_EQ(env.world_rank, 0);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_size, 1);
  EXPECT_EQ(env.host, "unknown-host");
}

TEST(SlurmTasksOnNode, ReadsSlurmsCompressedLists) {
  EXPECT_EQ(slurm_tasks_on_node("4", 0), 4);
  EXPECT_EQ(slurm_tasks_on_node("4", 1), -1);
  EXPECT_EQ(slurm_tasks_on_node("2(x3),1", 0), 2);
  EXPECT_EQ(slurm_tasks_on_node("2(x3),1", 2), 2);
  EXPECT_EQ(slurm_tasks_on_node("2(x3),1", 3), 1);
  EXPECT_EQ(slurm_tasks_on_node("2(x3),1", 4), -1);
  EXPECT_EQ(slurm_tasks_on_node("8,4(x2),2", 2), 4);
  EXPECT_EQ(slurm_tasks_on_node("8,4(x2),2", 3), 2);
  EXPECT_EQ(slurm_tasks_on_node("8,4(x2),2", 4), -1);
  EXPECT_EQ(slurm_tasks_on_node("", 0), -1);
  EXPECT_EQ(slurm_tasks_on_node("2(x", 0), -1);
  EXPECT_EQ(slurm_tasks_on_node("2(y3)", 0), -1);
  EXPECT_EQ(slurm_tasks_on_node("abc", 0), -1);
}

}  // namespace
}  // namespace tessera

// Job: everything one rank needs to train — backend, process groups, model shard, optimizer, trainer —
// built from a validated JobConfig. Shared by `tessera train`, `verify` and `bench`.
#pragma once

#include <memory>
#include <string>

#include "cluster/process_env.h"
#include "core/backend.h"
#include "core/model_config.h"
#include "launcher/common/config.h"
#include "launcher/run/trainer.h"
#include "models/registry.h"
#include "parallel/grad_sync.h"
#include "parallel/optimizer.h"
#include "parallel/process_group.h"
#include "parallel/rank_grid.h"
#include "proto/config.pb.h"

namespace tessera {

class MpiEnvironment;

struct Job {
  config::JobConfig config;
  Layout layout;
  ModelConfig model_config;
  int world_rank = 0;
  int threads = 1;
  std::unique_ptr<Backend> backend;
  ParallelGroups groups;
  std::unique_ptr<Model> model;
  std::unique_ptr<DpGradSync> grad_sync;
  // AdamW, or ZeroAdamW when parallel.zero_stage is 1 or 2.
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<Trainer> trainer;

  // Rank 0 prints and writes the run directory.
  bool is_logger() const { return world_rank == 0; }
};

LrSchedule lr_schedule_from(const config::JobConfig& job);

// Resolves the layout against the world, builds the groups and the model shard (parameters initialized
// from train.seed). Throws ConfigError for impossible layouts before any allocation.
Job build_job(const config::JobConfig& config, MpiEnvironment& mpi, const ProcessEnv& env);

// One line for train and bench (docs/memory.md): this rank's activation arena, split into its slots and what they
// share, the recomputation mode, and with one on, what recompute NONE would plan.
std::string activation_memory_line(const Job& job);
// "gradient memory: <bytes> on rank R (...)": this rank's gradient storage (Model::gradient_bytes), and with
// ZeRO-2 what the flat storage would need.
std::string gradient_memory_line(const Job& job);

// An inference job (tessera generate): the layout (which must be one copy of the model: parallel.dp = 1), the
// backend, the groups and this rank's model shard built with ModelUse::kInference for `batch` sequences of up to
// seq_len positions, its parameters zero (load them from a checkpoint). No optimizer, gradient sync or trainer.
// Throws ConfigError for impossible layouts before any allocation.
Job build_inference_job(const config::JobConfig& config, MpiEnvironment& mpi, const ProcessEnv& env, int batch,
                        int seq_len);

}  // namespace tessera

// The Checkpointer on 4 MPI ranks with real model shards, optimizers and process groups: a checkpoint saved
// in each layout of 4 ranks (tensor, pipeline and data parallel, with and without ZeRO-1; sync and async)
// loads bit-exactly in every other (weights, both moments, the step count, zero vocabulary padding); async
// saves copy the state before training changes it and publish between steps; a damaged latest checkpoint
// makes every rank fall back alike; a stop signal on one rank stops all.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/check.h"
#include "kernels/cpu/cpu_backend.h"
#include "launcher/checkpoints/checkpoint.h"
#include "launcher/checkpoints/checkpoint_manifest.h"
#include "launcher/common/config.h"
#include "launcher/common/stop_signal.h"
#include "launcher/run/job.h"
#include "models/gpt2/gpt2_model.h"
#include "parallel/mpi_process_group.h"
#include "parallel/parallel_groups.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/zero_optimizer.h"
#include "tests/checkpoint_state.h"
#include "tests/mpi_test_util.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;

constexpr double kTimeoutS = 60.0;

using tessera::mpi_test::world_rank;
using tessera::mpi_test::world_size;

// The world as a timed group, so that a rank that fails a test early turns its peers' waits into errors
// instead of hangs.
ProcessGroup& world() {
  static MpiProcessGroup group(MPI_COMM_WORLD, "world", kTimeoutS);
  return group;
}

void barrier() { world().barrier(); }

// A directory every rank agrees on, removed by rank 0 at the end.
class SharedDir {
 public:
  SharedDir() {
    int32_t pid = static_cast<int32_t>(::getpid());
    world().broadcast(Tensor(&pid, DType::kI32, Device::kCpu, {1}), 0)->wait();
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = (fs::temp_directory_path() /
             ("tessera_checkpoint_mpi_" + std::string(test->name()) + "_" + std::to_string(pid)))
                .string();
    if (world_rank() == 0) fs::remove_all(path_);
    barrier();
  }
  ~SharedDir() {
    try {
      barrier();
    } catch (const CommError&) {
      // A peer failed; its error is reported by the test.
    }
    if (world_rank() == 0) fs::remove_all(path_);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A layout of the 4 ranks.
struct Layout4 {
  int tp = 1, pp = 1, dp = 1;
  bool zero = false;  // ZeRO-1: the optimizer state sharded over DP
  std::string name() const { return str_cat("tp=", tp, " pp=", pp, " dp=", dp, zero ? " zero-1" : ""); }
};

config::JobConfig job_config(const Layout4& layout, const std::string& run_dir, bool async) {
  config::JobConfig job =
      parse_job_config(str_cat("model { vocab_size: 63 n_layer: 2 n_head: 4 n_embd: 16 max_seq_len: 16 }\n"
                               "train { steps: 10 global_batch: 8 seq_len: 16 threads: 1 }\n"
                               "data { mock: true }\n"
                               "parallel { tp: ",
                               layout.tp, " pp: ", layout.pp, " dp: ", layout.dp, " zero_stage: ", layout.zero ? 1 : 0,
                               " dp_bucket_mb: 0.001 timeout_s: ", kTimeoutS,
                               " }\n"
                               "checkpoint { keep_last: 0 async: ",
                               async ? "true" : "false", " }\nlogging { run_dir: \"", run_dir, "\" }\n"),
                       "test.textproto");
  validate_job_config(job);
  return job;
}

// build_job without the MpiEnvironment (the test's main owns it) and without a trainer.
Job make_job(const Layout4& layout, const std::string& run_dir, bool async = false) {
  Job job;
  job.config = job_config(layout, run_dir, async);
  job.layout = resolve_layout(job.config, world_size());
  job.model_config = model_config_from(job.config.model());
  job.world_rank = world_rank();
  job.threads = 1;
  job.backend = std::make_unique<CpuBackend>(1);
  job.groups = make_mpi_groups(RankGrid(layout.tp, layout.pp, layout.dp), job.world_rank, kTimeoutS);
  const int pp_rank = job.groups.pp->rank();
  const auto layers = split_layers(job.model_config.n_layer, layout.pp);
  StageRange stage;
  stage.first_layer = layers[pp_rank].first;
  stage.end_layer = layers[pp_rank].second;
  stage.has_embedding = pp_rank == 0;
  stage.has_head = pp_rank == layout.pp - 1;
  job.model = std::make_unique<Gpt2Model>(job.model_config, *job.backend, *job.groups.tp, stage,
                                          job.layout.micro_batch_size, job.config.train().seq_len(), 1);
  job.grad_sync =
      std::make_unique<DpGradSync>(*job.model, *job.backend, *job.groups.dp, job.config.parallel().dp_bucket_mb(),
                                   layout.zero ? DpGradSync::Mode::kReduceScatter : DpGradSync::Mode::kAllReduce);
  if (layout.zero) {
    job.optimizer = std::make_unique<ZeroAdamW>(*job.model, *job.backend, *job.grad_sync, AdamWConfig{},
                                                std::vector<ProcessGroup*>{});
  } else {
    job.optimizer = std::make_unique<AdamW>(*job.model, *job.backend, AdamWConfig{});
  }
  return job;
}

// The pieces of the job's state (weights, and the moments this rank holds), as the checkpointer sees them.
std::vector<StatePiece> pieces_of(Job& job) {
  OptimizerStateView view{job.optimizer->exp_avg(), job.optimizer->exp_avg_sq(), job.optimizer->state_ranges()};
  return plan_state_pieces(job.model->params(), view, {});
}

// expected_value of every element of a piece, through the TP map (padding zero).
std::vector<float> expected_piece(const LocalParam& p, const StatePiece& piece) {
  std::vector<float> global(static_cast<size_t>(p.spec.numel())), local(p.value.numel());
  for (int64_t g = 0; g < p.spec.numel(); ++g) global[g] = testing::expected_value(piece.kind, p.spec.name, g);
  slice_global_to_local(p.spec, p.layout, global.data(), local.data());
  return std::vector<float>(local.begin() + piece.begin, local.begin() + piece.end);
}

// Sets every element of the state to expected_value of its global element (padding zero), or to `poison`.
void fill_state(Job& job, bool expected, float poison = 0.0f) {
  for (const StatePiece& piece : pieces_of(job)) {
    if (expected) {
      const std::vector<float> want = expected_piece(job.model->params()[piece.param], piece);
      std::copy(want.begin(), want.end(), piece.memory.f32());
    } else {
      std::fill_n(piece.memory.f32(), piece.memory.numel(), poison);
    }
  }
}

// Every element of the state equals what fill_state(expected) writes, bit for bit.
void expect_state(Job& job, const std::string& what) {
  for (const StatePiece& piece : pieces_of(job)) {
    const LocalParam& p = job.model->params()[piece.param];
    const std::vector<float> want = expected_piece(p, piece);
    ASSERT_EQ(std::memcmp(piece.memory.f32(), want.data(), want.size() * sizeof(float)), 0)
        << what << ": " << state_kind_group(piece.kind) << "/" << p.spec.name << " differs on rank " << world_rank();
  }
}

// The layouts of 4 ranks the checkpoints move between: tensor, pipeline and data parallel, with and without
// ZeRO-1.
const Layout4 kLayouts[] = {{4, 1, 1}, {2, 1, 2},       {1, 1, 4},       {1, 2, 2},
                            {2, 2, 1}, {1, 1, 4, true}, {2, 1, 2, true}, {1, 2, 2, true}};

TEST(CheckpointerMpi, SaveInEveryLayoutLoadInEveryOther) {
  if (world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  for (const Layout4& saved : kLayouts) {
    // Every other saved layout saves asynchronously.
    const bool async = (&saved - kLayouts) % 2 == 1;
    SharedDir dir;
    {
      Job job = make_job(saved, dir.path(), async);
      fill_state(job, true);
      job.optimizer->set_steps_taken(4);
      DataSources data = open_data_sources(job.config);
      Checkpointer checkpointer(job, data, dir.path());
      checkpointer.save(5);
      // An async save must not see what training does next: it copied the state before returning.
      if (async) fill_state(job, false, 7.0f);
      checkpointer.finish();
    }
    for (const Layout4& loaded : kLayouts) {
      const std::string what =
          str_cat(async ? "async" : "sync", " save in ", saved.name(), ", load in ", loaded.name());
      Job job = make_job(loaded, dir.path() + "/other-run");
      fill_state(job, false, std::numeric_limits<float>::quiet_NaN());
      DataSources data = open_data_sources(job.config);
      Checkpointer checkpointer(job, data, dir.path() + "/other-run");
      EXPECT_EQ(checkpointer.resume(dir.path()), 5) << what;
      EXPECT_EQ(job.optimizer->steps_taken(), 4) << what;
      expect_state(job, what);
    }
  }
}

TEST(CheckpointerMpi, AsyncSaveIsPublishedBetweenStepsOnceEveryWriterIsDone) {
  if (world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  SharedDir dir;
  Job job = make_job({2, 1, 2}, dir.path(), true);
  fill_state(job, true);
  DataSources data = open_data_sources(job.config);
  Checkpointer checkpointer(job, data, dir.path());
  checkpointer.save(3);
  const std::string checkpoints = checkpoints_dir_of(dir.path());
  int32_t published = 0;
  for (int attempt = 0; attempt < 100 && !published; ++attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    EXPECT_FALSE(checkpointer.after_step(4 + attempt, false));
    published = world_rank() == 0 && read_latest(checkpoints) == std::optional<std::string>("step_00000003");
    world().broadcast(Tensor(&published, DType::kI32, Device::kCpu, {1}), 0)->wait();
  }
  EXPECT_TRUE(published);
  if (world_rank() == 0) {
    EXPECT_TRUE(verify_checkpoint(checkpoints + "/step_00000003").empty());
  }
}

TEST(CheckpointerMpi, DamagedLatestFallsBackOnEveryRank) {
  if (world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  SharedDir dir;
  {
    Job job = make_job({2, 1, 2}, dir.path());
    fill_state(job, true);
    DataSources data = open_data_sources(job.config);
    Checkpointer checkpointer(job, data, dir.path());
    checkpointer.save(1);
    fill_state(job, false, 3.0f);
    checkpointer.save(2);
  }
  const std::string damaged = checkpoints_dir_of(dir.path()) + "/step_00000002/shard_1.h5";
  if (world_rank() == 0) {
    std::fstream file(damaged, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(fs::file_size(damaged) / 2));
    file.put('\x7f');
  }
  barrier();
  Job job = make_job({1, 1, 4, true}, dir.path());
  DataSources data = open_data_sources(job.config);
  Checkpointer checkpointer(job, data, dir.path());
  EXPECT_EQ(checkpointer.resume("latest"), 1);
  expect_state(job, "fallen back to step 1");
}

TEST(CheckpointerMpi, AStopSignalOnOneRankStopsAllAndSaves) {
  if (world_size() != 4) GTEST_SKIP() << "needs 4 ranks";
  SharedDir dir;
  Job job = make_job({2, 1, 2}, dir.path());
  fill_state(job, true);
  DataSources data = open_data_sources(job.config);
  install_stop_signal_handlers();
  Checkpointer checkpointer(job, data, dir.path());
  EXPECT_FALSE(checkpointer.after_step(1, false));
  if (world_rank() == 2) std::raise(SIGTERM);
  EXPECT_TRUE(checkpointer.after_step(2, false));
  EXPECT_EQ(checkpointer.stop_signal(), SIGTERM);
  checkpointer.finish();
  if (world_rank() == 0) {
    EXPECT_EQ(read_latest(checkpoints_dir_of(dir.path())), std::optional<std::string>("step_00000002"));
  }
  clear_stop_signal();
}

}  // namespace
}  // namespace tessera

// `tessera bench`: training throughput on generated tokens for a named model shape, with the achieved
// model FLOP/s next to what this machine's sgemm reaches. A benchmark, never a test: it only measures.
//
// Model FLOPs per token (the usual dense-transformer count, full attention square):
//   6 * (non-embedding parameters + head parameters) + 12 * n_layer * n_embd * seq_len
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "cluster/process_env.h"
#include "core/check.h"
#include "launcher/cli_args.h"
#include "launcher/commands.h"
#include "launcher/config.h"
#include "launcher/data_sources.h"
#include "launcher/device_setup.h"
#include "launcher/job.h"
#include "parallel/mpi_environment.h"

namespace tessera {

namespace {

using Clock = std::chrono::steady_clock;

config::JobConfig bench_shape(const std::string& shape) {
  config::JobConfig job;
  job.set_name("bench-" + shape);
  auto* m = job.mutable_model();
  auto* t = job.mutable_train();
  if (shape == "tiny") {
    m->set_vocab_size(2048);
    m->set_n_layer(4);
    m->set_n_head(4);
    m->set_n_embd(128);
    m->set_max_seq_len(128);
    t->set_seq_len(128);
    t->set_global_batch(16);
  } else if (shape == "gpt2-124m") {
    m->set_vocab_size(50304);
    m->set_n_layer(12);
    m->set_n_head(12);
    m->set_n_embd(768);
    m->set_max_seq_len(1024);
    t->set_seq_len(256);
    t->set_global_batch(4);
  } else {
    TS_CHECK(false, ConfigError, "tessera bench: unknown --shape '", shape, "'; use tiny or gpt2-124m");
  }
  t->set_steps(10);
  job.mutable_optimizer()->set_lr(1e-4);
  job.mutable_data()->set_mock(true);
  return job;
}

// GFLOP/s of this backend's matmul at a GPT-2-like shape (inp [1024, 768] x W[3072, 768]^T).
double measure_sgemm_gflops(Backend& backend) {
  const int64_t N = 1024, C = 768, OC = 3072;
  Buffer buffer = backend.allocate(static_cast<size_t>(N * C + OC * C + N * OC) * sizeof(float));
  Tensor inp = buffer.tensor(0, DType::kF32, {N, C});
  Tensor w = buffer.tensor(N * C * sizeof(float), DType::kF32, {OC, C});
  Tensor out = buffer.tensor((N * C + OC * C) * sizeof(float), DType::kF32, {N, OC});
  backend.fill(inp, 0.5f);
  backend.fill(w, 0.25f);
  backend.matmul_forward(out, inp, w, Tensor());
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    auto start = Clock::now();
    for (int i = 0; i < 4; ++i) backend.matmul_forward(out, inp, w, Tensor());
    backend.synchronize();
    double s = std::chrono::duration<double>(Clock::now() - start).count();
    best = std::max(best, 4 * 2.0 * N * C * OC / s / 1e9);
  }
  return best;
}

}  // namespace

int bench_command(const std::vector<std::string>& args, MpiEnvironment& mpi, const ProcessEnv& env) {
  CliArgs cli("bench", args, {"--shape", "--steps", "--warmup", "--set"}, {"--no-dp-overlap"}, {"--set"});
  config::JobConfig config = bench_shape(cli.get("--shape", "tiny"));
  const int steps = std::stoi(cli.get("--steps", "5"));
  const int warmup = std::stoi(cli.get("--warmup", "1"));
  TS_CHECK(steps >= 1 && warmup >= 0, ConfigError, "tessera bench: --steps must be >= 1 and --warmup >= 0");
  config.mutable_train()->set_steps(steps + warmup);
  for (const std::string& assignment : cli.all("--set")) apply_override(config, assignment);
  validate_job_config(config);
  Job job = build_job(config, mpi, env);
  DataSources data = open_data_sources(config);
  // The reference for the overlapped DP gradient sync: the same buckets, all started after backward.
  const bool dp_overlap = !cli.has("--no-dp-overlap");
  job.grad_sync->set_overlap(dp_overlap);

  const ModelConfig& m = job.model_config;
  const int64_t T = config.train().seq_len();
  const double tokens_per_step = static_cast<double>(config.train().global_batch()) * T;
  const double embedding_params = static_cast<double>(m.vocab_size) * m.n_embd + static_cast<double>(m.max_seq_len) * m.n_embd;
  const double matmul_params = static_cast<double>(m.num_parameters()) - embedding_params +
                               static_cast<double>(m.vocab_size) * m.n_embd;  // + the tied head
  const double flops_per_token = 6.0 * matmul_params + 12.0 * m.n_layer * m.n_embd * T;

  for (int s = 0; s < warmup; ++s) job.trainer->train_step(s, *data.train);
  job.grad_sync->reset_stats();
  std::vector<double> times;
  for (int s = 0; s < steps; ++s) {
    auto start = Clock::now();
    job.trainer->train_step(warmup + s, *data.train);
    times.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  const double world = job.groups.world->size();
  const double sgemm = measure_sgemm_gflops(*job.backend);
  if (job.is_logger()) {
    std::printf("bench %s: %s, %d thread(s)/rank, %d rank(s); %d timed steps after %d warm-up\n",
                config.name().c_str(), RankGrid(job.layout.tp, job.layout.pp, job.layout.dp).to_string().c_str(),
                job.threads, static_cast<int>(world), steps, warmup);
    std::printf("  step time median %.1f ms (min %.1f, max %.1f)\n", median * 1e3, times.front() * 1e3,
                times.back() * 1e3);
    std::printf("  tokens/s: %.1f  (%.1f per rank)\n", tokens_per_step / median, tokens_per_step / median / world);
    std::printf("  model GFLOP/s: %.1f  (%.2f GFLOP per token, %.1f per rank)\n",
                flops_per_token * tokens_per_step / median / 1e9, flops_per_token / 1e9,
                flops_per_token * tokens_per_step / median / 1e9 / world);
    if (job.layout.dp > 1) {
      const DpSyncStats& sync = job.grad_sync->stats();
      // Per step, on rank 0: see DpSyncStats for what each number includes.
      const double per_step_ms = 1e3 / static_cast<double>(std::max<int64_t>(sync.steps, 1));
      std::printf(
          "  dp gradient sync on rank 0 (%s, %zu bucket(s) of <= %g MiB, overlap %s), ms/step: in flight %.1f, "
          "blocked in finish %.1f, exposed after backward %.1f; hidden %.0f%%\n",
          config.parallel().zero_stage() == 1 ? "reduce-scatter" : "all-reduce", job.grad_sync->buckets().size(),
          config.parallel().dp_bucket_mb(), dp_overlap ? "on" : "off", sync.comm_seconds * per_step_ms,
          sync.blocked_seconds * per_step_ms, sync.exposed_seconds * per_step_ms,
          100 * job.grad_sync->hidden_fraction());
    }
    std::printf("  sgemm GFLOP/s on rank 0 with %d thread(s): %.1f  -> model FLOP/s are %.0f%% of it per rank\n",
                job.threads, sgemm, 100.0 * flops_per_token * tokens_per_step / median / 1e9 / world / sgemm);
    const DeviceDescription device = describe_device(*job.backend);
    if (job.backend->device() == Device::kCuda) {
      const double tflops_per_rank = flops_per_token * tokens_per_step / median / 1e12 / world;
      if (device.bf16_peak_tflops > 0) {
        std::printf("  device: %s, dense bf16 peak %.0f TFLOP/s -> MFU %.1f%% (this run computes in fp32)\n",
                    device.name.c_str(), device.bf16_peak_tflops, 100.0 * tflops_per_rank / device.bf16_peak_tflops);
      } else {
        std::printf("  device: %s, dense bf16 peak unknown (not in Tessera's table): no MFU\n", device.name.c_str());
      }
    }
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace tessera

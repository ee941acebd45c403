// `tessera bench`: training throughput on generated tokens for a named model shape, with the achieved
// model FLOP/s (launcher/run/throughput.h) next to what this machine's matmul reaches, and MFU on a GPU whose peak is
// known. A benchmark, never a test: it only measures.
//
// Shapes: tiny and llama-tiny (CPU-sized); gpt2-124m, gpt2-350m, gpt2-774m (GPT-2 small, medium, large;
// vocabulary padded to 50304); llama-1b (Llama-3.2-1B's shape: 16 layers, 2048 wide, 32 query and 8 kv heads,
// SwiGLU 8192, vocabulary 128256, rope_theta 500000, untied head). On CPU the large shapes run seq 256, batch
// 4 in fp32; with train.device=CUDA they run seq 1024 in bf16 (llama-1b: seq 2048), with the batch below,
// unless --set says otherwise.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#include "cluster/process_env.h"
#include "core/check.h"
#include "launcher/commands/command_line.h"
#include "launcher/commands/commands.h"
#include "launcher/common/config.h"
#include "launcher/data/data_sources.h"
#include "launcher/run/auto_layout.h"
#include "launcher/run/device_setup.h"
#include "launcher/run/job.h"
#include "launcher/run/throughput.h"
#include "parallel/mpi_environment.h"

namespace tessera {

namespace {

using Clock = std::chrono::steady_clock;

struct BenchShape {
  const char* name;
  config::Arch arch;
  int vocab_size, n_layer, n_head, n_kv_head, n_embd, ffn_hidden, gpu_seq_len, gpu_batch;
};
constexpr BenchShape kShapes[] = {
    {"gpt2-124m", config::GPT2, 50304, 12, 12, 12, 768, 0, 1024, 32},
    {"gpt2-350m", config::GPT2, 50304, 24, 16, 16, 1024, 0, 1024, 16},
    {"gpt2-774m", config::GPT2, 50304, 36, 20, 20, 1280, 0, 1024, 8},
    {"llama-1b", config::LLAMA, 128256, 16, 32, 8, 2048, 8192, 2048, 4},
};

config::JobConfig bench_shape(const std::string& shape, bool gpu) {
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
  } else if (shape == "llama-tiny") {
    m->set_arch(config::LLAMA);
    m->set_vocab_size(2048);
    m->set_n_layer(4);
    m->set_n_head(4);
    m->set_n_kv_head(2);
    m->set_n_embd(128);
    m->set_ffn_hidden(352);
    m->set_max_seq_len(128);
    t->set_seq_len(128);
    t->set_global_batch(16);
  } else {
    const BenchShape* found = nullptr;
    for (const BenchShape& s : kShapes)
      if (shape == s.name) found = &s;
    TS_CHECK(found != nullptr, ConfigError, "tessera bench: unknown --shape '", shape,
             "'; use tiny, llama-tiny, gpt2-124m, gpt2-350m, gpt2-774m or llama-1b");
    m->set_arch(found->arch);
    m->set_vocab_size(found->vocab_size);
    m->set_n_layer(found->n_layer);
    m->set_n_head(found->n_head);
    m->set_n_embd(found->n_embd);
    if (found->arch == config::LLAMA) {
      m->set_n_kv_head(found->n_kv_head);
      m->set_ffn_hidden(found->ffn_hidden);
      m->set_rope_theta(500000);
    }
    m->set_max_seq_len(found->gpu_seq_len);
    t->set_seq_len(gpu ? found->gpu_seq_len : 256);
    t->set_global_batch(gpu ? found->gpu_batch : 4);
  }
  if (gpu) {
    t->set_device(config::CUDA);
    m->set_dtype(config::BF16);
  }
  t->set_steps(10);
  job.mutable_optimizer()->set_lr(1e-4);
  job.mutable_data()->set_mock(true);
  return job;
}

// The command line of `tessera bench`.
struct BenchFlags {
  std::string shape = "tiny";
  int steps = 5;
  int warmup = 1;
  bool no_dp_overlap = false;
  ConfigOverrides overrides;
};

int run_bench(const BenchFlags& flags, MpiEnvironment& mpi, const ProcessEnv& env) {
  // The device decides the defaults of the shape; the overrides are applied on top of them.
  config::JobConfig probe;
  apply_overrides(probe, flags.overrides);
  config::JobConfig config = bench_shape(flags.shape, probe.train().device() == config::CUDA);
  const int steps = flags.steps;
  const int warmup = flags.warmup;
  config.mutable_train()->set_steps(steps + warmup);
  const std::vector<std::string> notices = apply_overrides(config, flags.overrides);
  validate_job_config(config);
  std::string auto_line, auto_notice;
  config = resolve_auto_layout(config, mpi, &auto_line, &auto_notice);  // parallel.layout=auto
  Job job = build_job(config, mpi, env);
  print_notices(notices, job.is_logger());
  if (job.is_logger() && !auto_notice.empty()) std::printf("%s\n", auto_notice.c_str());
  if (job.is_logger() && !auto_line.empty()) std::printf("%s\n", auto_line.c_str());
  DataSources data = open_data_sources(config);
  // The reference for the overlapped DP gradient sync: the same buckets, all started after backward.
  const bool dp_overlap = !flags.no_dp_overlap;
  job.grad_sync->set_overlap(dp_overlap);

  const ModelConfig& m = job.model_config;
  const int64_t T = config.train().seq_len();
  const double tokens_per_step = static_cast<double>(config.train().global_batch()) * T;
  const double flops_per_token = model_flops_per_token(m, T);

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
    std::printf("bench %s: %s, %d thread(s)/rank, %d rank(s); %d timed steps after %d warm-up\n", config.name().c_str(),
                RankGrid(job.layout.tp, job.layout.pp, job.layout.dp).to_string().c_str(), job.threads,
                static_cast<int>(world), steps, warmup);
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
          config.parallel().zero_stage() == 2   ? "reduce-scatter per micro-batch"
          : config.parallel().zero_stage() == 1 ? "reduce-scatter"
                                                : "all-reduce",
          job.grad_sync->buckets().size(), config.parallel().dp_bucket_mb(), dp_overlap ? "on" : "off",
          sync.comm_seconds * per_step_ms, sync.blocked_seconds * per_step_ms, sync.exposed_seconds * per_step_ms,
          100 * job.grad_sync->hidden_fraction());
    }
    std::printf("  sgemm GFLOP/s on rank 0 with %d thread(s): %.1f  -> model FLOP/s are %.0f%% of it per rank\n",
                job.threads, sgemm, 100.0 * flops_per_token * tokens_per_step / median / 1e9 / world / sgemm);
    const DeviceDescription device = describe_device(*job.backend);
    std::printf("  %s\n", device_line(device, m.dtype).c_str());
    std::printf("  %s\n", activation_memory_line(job).c_str());
    std::printf("  %s\n", gradient_memory_line(job).c_str());
    if (job.backend->device() == Device::kCuda) {
      const Throughput t = throughput(m, T, tokens_per_step, median, static_cast<int>(world), device.bf16_peak_tflops);
      std::printf("  %.1f TFLOP/s per GPU%s; attention: %s\n", t.tflops_per_device,
                  t.mfu >= 0 ? str_cat(" -> MFU ", static_cast<int>(1000 * t.mfu + 0.5) / 10.0, "%").c_str() : "",
                  attention_engine(*job.backend).c_str());
      std::printf("  %s (rank 0)\n", memory_report(*job.backend).c_str());
    }
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

Command add_bench_command(CLI::App& tessera) {
  auto flags = std::make_shared<BenchFlags>();
  CLI::App* app = tessera.add_subcommand(
      "bench", "Measure training throughput (tokens/s, model FLOP/s, MFU on a known GPU) on generated tokens");
  app->add_option("--shape", flags->shape, "The model: tiny, llama-tiny, gpt2-124m, gpt2-350m, gpt2-774m or llama-1b")
      ->type_name("NAME")
      ->capture_default_str();
  app->add_option("--steps", flags->steps, "Timed steps")->check(CLI::PositiveNumber)->capture_default_str();
  app->add_option("--warmup", flags->warmup, "Untimed steps before them")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app->add_flag("--no-dp-overlap", flags->no_dp_overlap,
                "Start the data-parallel gradient sync after backward instead of during it (the reference)");
  add_override_options(app, &flags->overrides);
  Command command;
  command.app = app;
  command.run_mpi = [flags](MpiEnvironment& mpi, const ProcessEnv& env) { return run_bench(*flags, mpi, env); };
  return command;
}

}  // namespace tessera

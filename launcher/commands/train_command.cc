// `tessera train --config FILE [--set k=v]... [--unset k]... [--run-dir DIR] [--resume latest|auto|PATH]
// [--init-from PATH] [--trace-steps A:B]`: the training loop. One human line per logged step and the run's
// metrics.jsonl come from world rank 0 only. Checkpoints: see launcher/checkpoints/checkpoint.h.
//
// A run directory that already holds a run (metrics.jsonl, or anything in checkpoints/) is never started over:
// without --resume the job is refused (exit 2) before anything in it changes. `--resume auto` is an alias of
// `--resume latest`: continue from the newest usable checkpoint, or start from step 0 when there is none (what a
// requeued cluster job wants). A run stopped by a signal exits kExitStoppedBySignal (launcher/commands/exit_codes.h).
//
// What a person watches: rank 0's console is copied to RUN_DIR/train.log (appended on resume), every step's
// metrics go to metrics.jsonl (with "time", Unix seconds, and "tokens" seen so far) and, as scalars, to a
// TensorBoard event file in RUN_DIR/tensorboard/; at the end, RUN_DIR/plot.svg draws them (run_plot.h).
// --trace-steps A:B (logging.trace_steps) traces steps A to B into RUN_DIR/trace/ (run_trace.h).
//
// --init-from starts a new run from another run's weights only (fine-tuning): AdamW's moments at zero, step 0,
// this job's data, batch and order. With --resume latest as well, a checkpoint of this run takes precedence, so
// a requeued fine-tuning job continues itself instead of starting over.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <utility>

#include "cluster/process_env.h"
#include "core/check.h"
#include "core/trace.h"
#include "launcher/checkpoints/checkpoint.h"
#include "launcher/checkpoints/checkpoint_manifest.h"
#include "launcher/checkpoints/elastic_layout.h"
#include "launcher/commands/command_line.h"
#include "launcher/commands/commands.h"
#include "launcher/commands/exit_codes.h"
#include "launcher/common/config.h"
#include "launcher/common/durable_file.h"
#include "launcher/common/human_format.h"
#include "launcher/common/stop_signal.h"
#include "launcher/data/data_sources.h"
#include "launcher/data/multiple_choice_task.h"
#include "launcher/data/tokenizer.h"
#include "launcher/run/auto_layout.h"
#include "launcher/run/console_log.h"
#include "launcher/run/device_setup.h"
#include "launcher/run/job.h"
#include "launcher/run/multiple_choice.h"
#include "launcher/run/process_memory.h"
#include "launcher/run/run_dir.h"
#include "launcher/run/run_plot.h"
#include "launcher/run/run_trace.h"
#include "launcher/run/tensorboard_writer.h"
#include "launcher/run/throughput.h"
#include "models/registry.h"
#include "parallel/mpi_environment.h"

namespace tessera {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// "--debug-kill-during-save STEP:shards|manifest|rename" (tests of interrupted saves).
std::pair<int64_t, SaveCrashPoint> parse_crash_point(const std::string& value) {
  const size_t colon = value.find(':');
  const std::string point = colon == std::string::npos ? "" : value.substr(colon + 1);
  const SaveCrashPoint crash = point == "shards"     ? SaveCrashPoint::kAfterShards
                               : point == "manifest" ? SaveCrashPoint::kAfterManifest
                               : point == "rename"   ? SaveCrashPoint::kAfterRename
                                                     : SaveCrashPoint::kNone;
  TS_CHECK(crash != SaveCrashPoint::kNone && colon > 0 && value.find_first_not_of("0123456789") == colon, ConfigError,
           "--debug-kill-during-save takes STEP:shards, STEP:manifest or STEP:rename, not '", value, "'");
  return {std::stoll(value.substr(0, colon)), crash};
}

// Refuses (ConfigError) to start a new run in a directory that holds one: its metrics.jsonl or a checkpoint
// would be overwritten. World rank 0 looks and tells every rank, so that all of them decide alike: were each to
// look for itself, a slow rank could find the metrics.jsonl that rank 0 has just started and stop alone while
// the others train on without it (the run directory is on a file system all ranks share). Collective.
void refuse_existing_run(const std::string& run_dir, ProcessGroup& world) {
  namespace fs = std::filesystem;
  std::string problem;
  if (world.rank() == 0) {
    std::error_code error;
    const bool has_metrics = fs::exists(run_dir + "/metrics.jsonl", error);
    const std::string checkpoints = run_dir + "/checkpoints";
    const bool has_checkpoints =
        fs::is_directory(checkpoints, error) && fs::directory_iterator(checkpoints, error) != fs::directory_iterator();
    if (has_metrics || has_checkpoints) {
      problem = str_cat("run directory '", run_dir, "' already holds a run (",
                        has_metrics && has_checkpoints ? "metrics.jsonl and checkpoints/"
                        : has_metrics                  ? "metrics.jsonl"
                                                       : "checkpoints/",
                        "); nothing in it was changed. Continue that run with --resume latest (or --resume auto), or "
                        "start a new one with another --run-dir.");
    }
  }
  int32_t refused = problem.empty() ? 0 : 1;
  if (world.size() > 1) world.broadcast(Tensor(&refused, DType::kI32, Device::kCpu, {1}), 0)->wait();
  if (refused != 0) {
    throw ConfigError(problem.empty() ? str_cat("run directory '", run_dir, "' already holds a run (world rank 0 says)")
                                      : problem);
  }
}

std::string mib(double bytes) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f MiB", bytes / (1 << 20));
  return text;
}

// "peak memory: 240.5 MiB RSS on rank 0, the largest of 2 ranks (predicted 236.1 MiB: ...)": the largest peak
// resident set (VmHWM) of any rank, and on CPU the planner's prediction for the job's layout (docs/planner.md,
// "Memory model"). Collective over the world group (two all-reduces).
std::string peak_memory_line(const Job& job, const config::JobConfig& config) {
  ProcessGroup& world = *job.groups.world;
  const int32_t mine_kib = static_cast<int32_t>(std::min<int64_t>(process_memory().peak_bytes / 1024, INT32_MAX));
  int32_t peak_kib = mine_kib;
  int32_t peak_rank = 0;
  if (world.size() > 1) {
    world.all_reduce(Tensor(&peak_kib, DType::kI32, Device::kCpu, {1}), ReduceOp::kMax)->wait();
    int32_t rank = mine_kib == peak_kib ? -job.world_rank : -world.size();  // the lowest rank at the peak
    world.all_reduce(Tensor(&rank, DType::kI32, Device::kCpu, {1}), ReduceOp::kMax)->wait();
    peak_rank = -rank;
  }
  std::string line = str_cat("peak memory: ", mib(peak_kib * 1024.0), " RSS on rank ", peak_rank, ", the largest of ",
                             world.size(), " rank(s)");
  if (config.train().device() != config::CPU) return line + " (host memory; the GPU's is above)";
  PlanLayout layout = plan_layout_of(config, job.layout);
  layout.threads = job.threads;
  const DeviceSpec device =
      cpu_device(kAutoLayoutCpuGflops, 1e6, world.size(), static_cast<double>(startup_memory().rss_bytes));
  const MemoryPrediction p = predict_memory(config, layout, device);
  return str_cat(line, " (predicted ", mib(p.total()), " on the fullest stage: ", mib(p.allocated()),
                 " model and training, ", mib(p.process), " process at start, ", mib(p.mpi), " MPI, ", mib(p.threads),
                 " for ", layout.threads, " thread(s), ", mib(p.rank), " the rest of a rank)");
}

// The command line of `tessera train`.
struct TrainFlags {
  CLI::App* app = nullptr;
  std::string config, run_dir, resume, init_from;
  ConfigOverrides overrides;
  std::string trace_steps;
  std::string kill_during_save, fail_shard_write, inject_loss_spike;  // test hooks
  bool given(const char* flag) const { return app->count(flag) > 0; }
};

int run_train(const TrainFlags& flags_in, MpiEnvironment& mpi, const ProcessEnv& env) {
  // --trace-steps A:B is logging.trace_steps, validated with the rest of the config.
  TrainFlags flags = flags_in;
  if (flags.given("--trace-steps")) flags.overrides.set.push_back("logging.trace_steps=" + flags.trace_steps);
  TS_CHECK(!flags.given("--init-from") || flags.given("--config"), ConfigError,
           "--init-from needs --config FILE.textproto: the new run's job (its data, batch and schedule)");
  TS_CHECK(flags.given("--config") || flags.given("--resume"), ConfigError,
           "give the job with --config FILE.textproto, or --resume CHECKPOINT|RUN_DIR to continue a "
           "run with the job config saved in its checkpoint");
  // "auto" and "latest" are the same (see the top of this file).
  const std::string resume_spec = flags.resume == "auto" ? "latest" : flags.resume;
  std::string config_source;
  std::vector<std::string> notices;
  config::JobConfig config = flags.given("--config")
                                 ? load_job_config(flags.config, flags.overrides, &notices)
                                 : config_from_checkpoint(resume_spec, flags.run_dir, flags.overrides, "--resume",
                                                          /*keep_layout=*/true, &config_source, &notices);
  if (flags.given("--run-dir")) config.mutable_logging()->set_run_dir(flags.run_dir);
  // parallel.layout=auto: the planner's layout replaces it before anything else reads the layout, so the run
  // directory's config and the checkpoints record the layout that ran.
  std::string auto_line, auto_notice;
  config = resolve_auto_layout(config, mpi, &auto_line, &auto_notice);
  // A checkpoint written by another number of ranks continues in the layout that fits this world
  // (Note [Elastic layout] in launcher/checkpoints/elastic_layout.h).
  const std::string layout_change =
      flags.given("--resume") ? adapt_layout_for_resume(config, resume_spec, mpi.world_size(), flags.overrides.set)
                              : "";

  Job job = build_job(config, mpi, env);
  const config::TrainConfig& train = config.train();
  const config::LoggingConfig& logging = config.logging();
  DataSources data = open_data_sources(config);
  const bool log = job.is_logger();
  // Everything rank 0 prints from here on also goes to train.log once the run directory exists.
  std::unique_ptr<ConsoleLog> console = log ? std::make_unique<ConsoleLog>() : nullptr;

  const std::string run_dir = logging.run_dir();
  if (!flags.given("--resume")) refuse_existing_run(run_dir, *job.groups.world);

  std::unique_ptr<MetricsWriter> metrics;
  std::unique_ptr<TensorBoardWriter> tensorboard;
  if (log) {
    // The run's first line: who started the ranks (Slurm's srun, mpirun, none) and the GPUs they may use.
    std::printf("%s\n", env.launcher_line().c_str());
    const ModelConfig& m = job.model_config;
    std::printf(
        "tessera train: %s | %s %d layers, %d heads, C %d, vocab %d (%s params) | %s, %d micro-batch(es) "
        "of %d | %d thread(s)/rank | %s tokens/step | data: %s\n",
        config.name().c_str(), m.arch.c_str(), m.n_layer, m.n_head, m.n_embd, m.vocab_size,
        human_count(static_cast<double>(num_parameters(m))).c_str(),
        RankGrid(job.layout.tp, job.layout.pp, job.layout.dp).to_string().c_str(), job.layout.micro_batches,
        job.layout.micro_batch_size, job.threads,
        human_count(static_cast<double>(train.global_batch()) * train.seq_len()).c_str(), data.description.c_str());
    std::printf("%s\n", device_line(describe_device(*job.backend), m.dtype).c_str());
    std::printf("%s\n", activation_memory_line(job).c_str());
    std::printf("%s\n", gradient_memory_line(job).c_str());
    if (!auto_notice.empty()) std::printf("%s\n", auto_notice.c_str());
    if (!auto_line.empty()) std::printf("%s\n", auto_line.c_str());
    if (!layout_change.empty()) std::printf("%s\n", layout_change.c_str());
    for (const std::string& warning : data.warnings) std::printf("warning: %s\n", warning.c_str());
    if (!config_source.empty()) {
      const ConfigOverrides& overrides = flags.overrides;
      std::printf("job config: the one saved in %s%s\n", config_source.c_str(),
                  !overrides.unset.empty() ? ", with the --set/--unset overrides"
                  : !overrides.set.empty() ? ", with the --set overrides"
                                           : "");
    }
    print_notices(notices, log);
  }

  // ---- checkpoints (launcher/checkpoints/checkpoint.h): resume, then save between steps ----
  install_stop_signal_handlers();
  Checkpointer checkpointer(job, data, run_dir);
  if (flags.given("--debug-kill-during-save")) {
    const auto [crash_step, crash_point] = parse_crash_point(flags.kill_during_save);
    checkpointer.crash_during_save(crash_step, crash_point);
  }
  if (flags.given("--debug-fail-shard-write")) {  // "STEP:RANK" (tests of a failed save)
    const std::string value = flags.fail_shard_write;
    const size_t colon = value.find(':');
    TS_CHECK(colon != std::string::npos && colon > 0 && colon + 1 < value.size() &&
                 value.find_first_not_of("0123456789:") == std::string::npos,
             ConfigError, "--debug-fail-shard-write takes STEP:RANK, not '", value, "'");
    checkpointer.fail_shard_write(std::stoll(value.substr(0, colon)), std::stoi(value.substr(colon + 1)));
  }
  if (flags.given("--debug-inject-loss-spike")) {  // "STEP:COUNT", STEP 1-based as in metrics.jsonl (tests)
    const std::string value = flags.inject_loss_spike;
    const size_t colon = value.find(':');
    TS_CHECK(colon != std::string::npos && colon > 0 && colon + 1 < value.size() &&
                 value.find_first_not_of("0123456789:") == std::string::npos,
             ConfigError, "--debug-inject-loss-spike takes STEP:COUNT, not '", value, "'");
    job.trainer->inject_loss_spikes(std::stoi(value.substr(0, colon)) - 1, std::stoi(value.substr(colon + 1)));
  }
  const int start_step = flags.given("--resume") ? static_cast<int>(checkpointer.resume(resume_spec)) : 0;
  if (flags.given("--init-from")) {
    if (checkpointer.resumed()) {
      if (log) std::printf("--init-from %s ignored: this run has a checkpoint of its own\n", flags.init_from.c_str());
    } else {
      checkpointer.load_weights(flags.init_from, "--init-from");
    }
  }
  // ---- end of checkpoints ----
  // Only now, with the job's config, data and checkpoint checked, does anything in the run directory change.
  if (log) {
    make_directories(run_dir);
    write_file_atomically(run_dir + "/config.textproto", job_config_to_text(config));
    metrics = start_step > 0 ? std::make_unique<MetricsWriter>(run_dir + "/metrics.jsonl", start_step)
                             : std::make_unique<MetricsWriter>(run_dir + "/metrics.jsonl");
    console->open(run_dir + "/train.log");
    tensorboard = std::make_unique<TensorBoardWriter>(run_dir + "/tensorboard");
  }

  // The task scored at each evaluation, read before the first step so that a bad file fails now.
  std::unique_ptr<Tokenizer> task_tokenizer;
  std::vector<tasks::MultipleChoiceExample> task;
  if (logging.has_eval_task()) {
    task_tokenizer = std::make_unique<Tokenizer>(config.data().tokenizer(), "data.tokenizer");
    task = read_multiple_choice_task(logging.eval_task());
  }

  const double tokens_per_step = static_cast<double>(train.global_batch()) * train.seq_len();
  const double peak_tflops = describe_device(*job.backend).bf16_peak_tflops;
  const bool on_gpu = job.backend->device() == Device::kCuda;
  const GridCoord coord = RankGrid(job.layout.tp, job.layout.pp, job.layout.dp).coord(job.world_rank);
  RunTrace run_trace(run_dir, logging.trace_steps(), *job.groups.world,
                     str_cat("rank ", job.world_rank, " (tp ", coord.tp, ", pp ", coord.pp, ", dp ", coord.dp, ")"));
  const auto run_start = Clock::now();
  double first_loss = NAN, last_loss = NAN, best_val = INFINITY;
  int best_val_step = -1, consecutive_skips = 0, skipped_total = 0;
  int steps_done = start_step;
  for (int step = start_step; step < train.steps(); ++step) {
    run_trace.before_step(step + 1);
    // The whole step on a track of its own: the training step, validation, the checkpoint save.
    std::optional<trace::Span> step_span(std::in_place, trace::Track::kStep, "step", "step");
    if (step_span->on()) step_span->name(str_cat("step ", step + 1));
    const auto step_start = Clock::now();
    StepResult r = job.trainer->train_step(step, *data.train);
    const double seconds = seconds_since(step_start);
    if (step == start_step) first_loss = r.loss;
    last_loss = r.loss;
    if (r.skipped) {
      ++skipped_total;
      // The row of this step is written before the run stops, so that metrics.jsonl shows why.
      ++consecutive_skips;
    } else {
      consecutive_skips = 0;
    }
    const bool last = step + 1 == train.steps();
    double val_loss = NAN;
    std::optional<MultipleChoiceResult> task_result;
    const bool evaluate = logging.eval_every() > 0 && ((step + 1) % logging.eval_every() == 0 || last);
    if (evaluate && data.valid) {
      val_loss = job.trainer->evaluate(*data.valid, 0, logging.eval_batches());
      if (val_loss < best_val) {
        best_val = val_loss;
        best_val_step = step + 1;
      }
    }
    if (evaluate && !task.empty()) {
      task_result = score_multiple_choice(*job.trainer, *task_tokenizer, task, train.seq_len(), train.global_batch(),
                                          logging.eval_task());
    }
    steps_done = step + 1;
    if (log) {
      const double tokens_per_s = tokens_per_step / seconds;
      const Throughput t = throughput(job.model_config, train.seq_len(), tokens_per_step, seconds,
                                      job.groups.world->size(), peak_tflops);
      JsonObject row;
      row.add("step", step + 1).add("loss", r.loss).add("lr", r.lr).add("grad_norm", r.grad_norm);
      row.add("tokens_per_s", tokens_per_s).add("ms_per_step", seconds * 1e3);
      row.add("tflops_per_rank", t.tflops_per_device);
      if (t.mfu >= 0) row.add("mfu", t.mfu);
      if (r.skipped) row.add("skipped", 1);
      if (r.spike) row.add("spike", 1);
      if (!std::isnan(val_loss)) row.add("val_loss", val_loss);
      if (task_result) row.add("task_acc", task_result->acc()).add("task_acc_norm", task_result->acc_norm());
      const double now = unix_seconds();
      row.add_fixed("time", now, 3).add("tokens", static_cast<long long>(tokens_per_step) * (step + 1));
      metrics->write_line(row.str());
      const int64_t tb_step = step + 1;
      tensorboard->add_scalar("loss", r.loss, tb_step, now);
      if (!std::isnan(val_loss)) tensorboard->add_scalar("val_loss", val_loss, tb_step, now);
      tensorboard->add_scalar("lr", r.lr, tb_step, now);
      tensorboard->add_scalar("grad_norm", r.grad_norm, tb_step, now);
      tensorboard->add_scalar("tokens_per_s", tokens_per_s, tb_step, now);
      if (t.mfu >= 0) tensorboard->add_scalar("mfu", t.mfu, tb_step, now);
      if (task_result) tensorboard->add_scalar("task_acc", task_result->acc(), tb_step, now);
      tensorboard->flush();
      if ((step + 1) % logging.log_every() == 0 || step == start_step || last || r.skipped) {
        std::printf("step %5d/%d | loss %.4f | lr %.2e | grad norm %.3f | %s tok/s | %.1f ms%s%s\n", step + 1,
                    train.steps(), r.loss, r.lr, r.grad_norm, human_count(tokens_per_s).c_str(), seconds * 1e3,
                    on_gpu ? (" | " + format_throughput(t)).c_str() : "",
                    r.spike     ? " | spike: update skipped"
                    : r.skipped ? " | not finite: update skipped"
                                : "");
      }
      if (!std::isnan(val_loss)) std::printf("step %5d/%d | val loss %.4f\n", step + 1, train.steps(), val_loss);
      if (task_result) {
        std::printf("step %5d/%d | task acc %.4f, acc_norm %.4f (%lld examples)\n", step + 1, train.steps(),
                    task_result->acc(), task_result->acc_norm(), static_cast<long long>(task_result->examples));
      }
      std::fflush(stdout);
    }
    TS_CHECK(consecutive_skips < train.max_skipped(), Error, "the update was skipped for ", consecutive_skips,
             " consecutive steps (train.max_skipped; last: step ", step + 1, ", loss ", r.loss, ", grad norm ",
             r.grad_norm, r.spike ? ", a spike above train.spike_zscore" : ", not finite",
             "): training diverged. Lower optimizer.lr or set train.grad_clip",
             r.spike ? ", raise train.spike_zscore, or look at the data of these steps." : ".");
    const bool stop = checkpointer.after_step(step + 1, last);  // a stop signal: saved (save_on_exit), leave
    step_span.reset();
    run_trace.after_step(step + 1);
    if (stop) break;
  }
  checkpointer.finish();
  run_trace.finish();

  const std::string peak_memory = peak_memory_line(job, config);  // collective: every rank's peak
  const bool stopped = checkpointer.stop_signal() != 0 && steps_done < train.steps();
  if (log && stopped) {
    std::printf("stopped by %s after step %d (exit code %d): the run can continue with --resume auto\n",
                stop_signal_name(checkpointer.stop_signal()), steps_done, kExitStoppedBySignal);
  }
  if (log) {
    const double total = seconds_since(run_start);
    const int steps_run = steps_done - start_step;
    std::printf("done: %d steps, %s tokens in %.1f s (%s tok/s); train loss %.4f -> %.4f", steps_run,
                human_count(tokens_per_step * steps_run).c_str(), total,
                human_count(tokens_per_step * steps_run / total).c_str(), first_loss, last_loss);
    if (best_val_step > 0) std::printf("; best val loss %.4f at step %d", best_val, best_val_step);
    if (skipped_total > 0) std::printf("; %d step(s) skipped (not finite or a spike)", skipped_total);
    std::printf("\n");
    const std::string memory = memory_report(*job.backend);
    if (!memory.empty()) std::printf("%s (rank 0)\n", memory.c_str());
    std::printf("%s\n", peak_memory.c_str());
    // The picture of the run (a few hundred kB at most, milliseconds to draw). A failure to write it does not
    // fail a run whose steps and checkpoints are done: it is reported, and `tessera plot` draws it again.
    try {
      write_run_plot(run_dir, run_dir + "/plot.svg");
    } catch (const Error& e) {
      std::printf("warning: no plot.svg: %s\n", e.what());
    }
    std::printf("run directory: %s (config.textproto, metrics.jsonl, train.log, tensorboard/, plot.svg)\n",
                run_dir.c_str());
    std::fflush(stdout);
  }
  return stopped ? kExitStoppedBySignal : kExitSuccess;
}

}  // namespace

Command add_train_command(CLI::App& tessera) {
  auto flags = std::make_shared<TrainFlags>();
  CLI::App* app = tessera.add_subcommand(
      "train",
      "Train a GPT or Llama model (under mpirun for several ranks, in any TP x PP x DP layout).\n"
      "A run directory that holds a run is refused unless --resume is given.");
  flags->app = app;
  app->add_option("--config", flags->config, "The job: a JobConfig in protobuf text format (proto/config.proto)")
      ->type_name("FILE.textproto");
  add_override_options(app, &flags->overrides);
  app->add_option("--run-dir", flags->run_dir, "Where the run's metrics, logs and checkpoints go (logging.run_dir)")
      ->type_name("DIR");
  app->add_option("--resume", flags->resume,
                  "Continue from a checkpoint in any layout: latest (or its alias auto) is the run directory's\n"
                  "newest complete checkpoint, or step 0 when it has none; or a checkpoint or run directory.\n"
                  "Without --config, the job config saved in the checkpoint is used")
      ->type_name("latest|auto|PATH");
  app->add_option("--init-from", flags->init_from,
                  "Start a new run from a checkpoint's weights only (fine-tuning; needs --config); a checkpoint\n"
                  "of this run, with --resume, takes precedence")
      ->type_name("PATH");
  app->add_option("--trace-steps", flags->trace_steps,
                  "Write a Chrome/Perfetto trace of steps A to B (1-based, inclusive) to RUN_DIR/trace/trace.json\n"
                  "(logging.trace_steps)")
      ->type_name("A:B");
  // Test hooks, accepted but left out of --help.
  app->add_option("--debug-kill-during-save", flags->kill_during_save)->group("");
  app->add_option("--debug-fail-shard-write", flags->fail_shard_write)->group("");
  app->add_option("--debug-inject-loss-spike", flags->inject_loss_spike)->group("");
  Command command;
  command.app = app;
  command.run_mpi = [flags](MpiEnvironment& mpi, const ProcessEnv& env) { return run_train(*flags, mpi, env); };
  return command;
}

}  // namespace tessera

// `tessera eval --checkpoint PATH|RUN_DIR [--data PREFIX [--max-tokens N]] [--task FILE.jsonl] [--json]
//  [--config FILE] [--set k=v]... [--unset k]...`: the mean cross-entropy and perplexity of a checkpoint's model over a
// Megatron-format dataset, and its accuracy on a multiple-choice task (launcher/run/multiple_choice.h), in any
// layout (under mpirun, with --set parallel.tp=... as for train). Nothing is written.
//
// The dataset's token stream is cut as training cuts it (windows of train.seq_len + 1 tokens at stride
// seq_len: every token but the first is a target once), taken in order, in batches of train.global_batch
// windows (the job's, or --set train.global_batch=N). The windows after the last whole batch are left out and
// counted in the output; --max-tokens N stops after N target tokens, rounded down to whole batches. World rank 0
// shows the progress in windows on stderr (launcher/common/progress.h).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "cluster/process_env.h"
#include "core/check.h"
#include "launcher/checkpoints/checkpoint.h"
#include "launcher/checkpoints/checkpoint_manifest.h"
#include "launcher/commands/command_line.h"
#include "launcher/commands/commands.h"
#include "launcher/common/config.h"
#include "launcher/common/durable_file.h"
#include "launcher/common/human_format.h"
#include "launcher/common/progress.h"
#include "launcher/data/data_sources.h"
#include "launcher/data/sampler.h"
#include "launcher/data/tokenizer.h"
#include "launcher/run/job.h"
#include "launcher/run/multiple_choice.h"
#include "launcher/run/run_dir.h"
#include "parallel/mpi_environment.h"

namespace tessera {

namespace {

// The command line of `tessera eval`.
struct EvalFlags {
  CLI::App* app = nullptr;
  std::string checkpoint, data, max_tokens, task, per_example, config;
  bool json = false;
  ConfigOverrides overrides;
  bool given(const char* flag) const { return app->count(flag) > 0; }
};

int run_eval(const EvalFlags& flags, MpiEnvironment& mpi, const ProcessEnv& env) {
  TS_CHECK(flags.given("--checkpoint"), ConfigError,
           "give the model with --checkpoint CHECKPOINT|RUN_DIR (a checkpoint directory, or a run directory for its "
           "newest complete checkpoint)");
  TS_CHECK(flags.given("--data") || flags.given("--task"), ConfigError,
           "give the dataset with --data PREFIX (PREFIX.bin and PREFIX.idx, as `tessera prepare` writes them), a "
           "multiple-choice task with --task FILE.jsonl, or both");
  TS_CHECK(!flags.given("--max-tokens") || flags.given("--data"), ConfigError,
           "--max-tokens limits --data; give --data");
  TS_CHECK(!flags.given("--per-example") || flags.given("--task"), ConfigError,
           "--per-example FILE.jsonl lists the examples of --task; give --task");
  const std::string spec = flags.checkpoint;
  const std::string prefix = flags.data;
  int64_t max_tokens = -1;
  if (flags.given("--max-tokens")) {
    const std::string value = flags.max_tokens;
    TS_CHECK(!value.empty() && value.find_first_not_of("0123456789") == std::string::npos && std::stoll(value) > 0,
             ConfigError, "--max-tokens takes a positive number of tokens, not '", value, "'");
    max_tokens = std::stoll(value);
  }
  std::string config_source;
  config::JobConfig config;
  if (flags.given("--config")) {
    config = load_job_config(flags.config, {});
  } else {
    // Any layout: not necessarily the one the run trained in (--set parallel.tp=... picks one).
    config = config_from_checkpoint(spec, "", {}, "--checkpoint", /*keep_layout=*/false, &config_source);
  }
  // The dataset to score replaces the job's training data; the tokenizer stays, to check the checkpoint's.
  config::DataConfig* data_config = config.mutable_data();
  data_config->clear_train_blend();
  data_config->clear_valid_prefix();
  data_config->clear_loss_mask();  // every target counts (a fine-tuned model's eval too)
  if (prefix.empty()) {
    data_config->clear_train_prefix();
    data_config->set_mock(true);  // a task only: no dataset to open
  } else {
    data_config->set_mock(false);
    data_config->set_train_prefix(prefix);
  }
  config.mutable_logging()->set_eval_every(0);
  // Nothing is saved: no staging buffer either.
  config.mutable_checkpoint()->set_every_steps(0);
  config.mutable_checkpoint()->set_async(false);
  config.mutable_checkpoint()->set_save_on_exit(false);
  const std::vector<std::string> notices = apply_overrides(config, flags.overrides);
  validate_job_config(config);

  Job job = build_job(config, mpi, env);
  DataSources data = open_data_sources(config);
  const bool log = job.is_logger();
  print_notices(notices, log, flags.json ? stderr : stdout);
  Checkpointer checkpointer(job, data, config.logging().run_dir());
  const std::string loaded = checkpointer.load_weights(spec, "--checkpoint");

  const int T = config.train().seq_len();
  const int64_t G = config.train().global_batch();
  JsonObject row;
  row.add("checkpoint", loaded);
  bool finite = true;
  if (!prefix.empty()) {
    const GptSampler windows(*data.train_data.front(), T, 0, /*shuffle=*/false);
    int64_t usable = windows.samples_per_epoch();
    if (max_tokens > 0) usable = std::min<int64_t>(usable, max_tokens / T);
    const int64_t batches = usable / G;
    TS_CHECK(batches > 0, ConfigError, prefix, ": ", windows.samples_per_epoch(), " window(s) of ", T + 1, " tokens",
             max_tokens > 0 ? str_cat(" (", usable, " within --max-tokens ", max_tokens, ")") : std::string(),
             ", fewer than one batch of train.global_batch = ", G,
             ": lower it with --set train.global_batch=N (a multiple of dp x parallel.micro_batches)");
    TS_CHECK(batches <= std::numeric_limits<int>::max(), ConfigError, "--data ", prefix, ": too many batches");
    Progress progress("eval",
                      {{"windows", ProgressUnit::kCount, batches * G}, {"tokens", ProgressUnit::kCount, -1, true}},
                      progress_options(log));
    const double loss = job.trainer->evaluate(windows, 0, static_cast<int>(batches), [&](int done) {
      progress.update({done * G, done * G * T});
    });
    progress.finish();
    finite = std::isfinite(loss);
    const int64_t tokens = batches * G * T;
    const int64_t left_out = windows.samples_per_epoch() - batches * G;
    row.add("data", prefix).add("tokens", static_cast<long long>(tokens));
    row.add("windows", static_cast<long long>(batches * G)).add("left_out_windows", static_cast<long long>(left_out));
    row.add("seq_len", T).add("loss", loss).add("perplexity", std::exp(loss));
    if (log && !flags.json) {
      std::printf("eval %s on %s: %s tokens in %lld windows of %d (%lld left out), loss %.6f, perplexity %.4f\n",
                  loaded.c_str(), prefix.c_str(), human_count(static_cast<double>(tokens)).c_str(),
                  static_cast<long long>(batches * G), T, static_cast<long long>(left_out), loss, std::exp(loss));
    }
  }
  if (flags.given("--task")) {
    const std::string task = flags.task;
    TS_CHECK(!config.data().tokenizer().empty(), ConfigError, "--task ", task,
             ": the checkpoint's job names no data.tokenizer to turn the task's text into tokens; give it with "
             "--set data.tokenizer=PATH.model");
    const Tokenizer tokenizer(config.data().tokenizer(), "data.tokenizer");
    const std::vector<tasks::MultipleChoiceExample> examples = read_multiple_choice_task(task);
    const MultipleChoiceResult r =
        score_multiple_choice(*job.trainer, tokenizer, examples, T, static_cast<int>(G), task);
    if (log && flags.given("--per-example")) {
      // One line per example: its line in the task, the label, every choice's log-likelihood, the predictions.
      std::string lines;
      for (size_t e = 0; e < r.loglik.size(); ++e) {
        JsonObject line;
        line.add("line", static_cast<long long>(e + 1)).add("label", examples[e].label()).add("loglik", r.loglik[e]);
        line.add("pred", r.pred[e]).add("pred_norm", r.pred_norm[e]);
        lines += line.str() + "\n";
      }
      write_file_atomically(flags.per_example, lines);
    }
    row.add("task", task).add("examples", static_cast<long long>(r.examples));
    row.add("acc", r.acc()).add("acc_norm", r.acc_norm()).add("truncated", static_cast<long long>(r.truncated));
    if (log && !flags.json) {
      std::printf(
          "eval %s on %s: %lld examples, acc %.4f (%lld right), acc_norm %.4f (%lld right)%s\n", loaded.c_str(),
          task.c_str(), static_cast<long long>(r.examples), r.acc(), static_cast<long long>(r.correct), r.acc_norm(),
          static_cast<long long>(r.correct_norm),
          r.truncated ? str_cat("; ", r.truncated, " choice(s) lost context to fit train.seq_len").c_str() : "");
    }
  }
  if (log && flags.json) std::printf("%s\n", row.str().c_str());
  std::fflush(stdout);
  return finite ? 0 : 1;
}

}  // namespace

Command add_eval_command(CLI::App& tessera) {
  auto flags = std::make_shared<EvalFlags>();
  CLI::App* app = tessera.add_subcommand(
      "eval",
      "The mean loss and perplexity of a checkpoint over a dataset, and its accuracy on a multiple-choice\n"
      "task, in any layout (under mpirun with --set parallel.*); nothing is written");
  flags->app = app;
  app->add_option("--checkpoint", flags->checkpoint,
                  "The model: a checkpoint directory, or a run directory for its newest complete checkpoint")
      ->type_name("PATH|RUN_DIR");
  app->add_option("--data", flags->data, "A tokenized dataset to score: PREFIX.bin + PREFIX.idx (tessera prepare)")
      ->type_name("PREFIX");
  app->add_option("--max-tokens", flags->max_tokens, "Score at most N target tokens of --data (whole batches)")
      ->type_name("N");
  app->add_option("--task", flags->task, "A multiple-choice task to score (JSON Lines, docs/eval.md)")
      ->type_name("FILE.jsonl");
  app->add_option("--per-example", flags->per_example,
                  "Also write every example's log-likelihoods and predictions of --task here (JSON Lines)")
      ->type_name("FILE");
  app->add_option("--config", flags->config, "Take the job config from this file instead of the checkpoint's")
      ->type_name("FILE.textproto");
  app->add_flag("--json", flags->json, "Print one JSON object instead of the text lines");
  add_override_options(app, &flags->overrides);
  Command command;
  command.app = app;
  command.run_mpi = [flags](MpiEnvironment& mpi, const ProcessEnv& env) { return run_eval(*flags, mpi, env); };
  return command;
}

}  // namespace tessera

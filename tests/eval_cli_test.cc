// `tessera eval` and `tessera train --init-from` as a user runs them: eval's loss over a dataset equals the loss
// train computes on the same windows from the same weights, in any layout; --init-from starts a new run from a
// checkpoint's weights (step 0, fresh optimizer) and yields to the run's own checkpoint on a requeue; the errors
// a user can make are named.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/check.h"
#include "launcher/data/indexed_dataset.h"
#include "tests/run_command.h"
#include "tests/temp_dir.h"

namespace tessera {
namespace {

using testing::run_command;
using testing::TempDir;

const std::string kTessera = TESSERA_BINARY;
const std::string kEnvironment =
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE ";
const std::string kFixture = std::string(TESSERA_TEST_DATA) + "/llama-tiny.h5";  // vocab 512, seq 32, batch 8

std::string tessera(const std::string& args, int ranks = 1) {
  const std::string launcher = ranks == 1 ? "" : str_cat(TESSERA_MPIEXEC, " --oversubscribe -np ", ranks, " ");
  return kEnvironment + launcher + kTessera + " " + args;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A dataset of exactly `windows` training windows of seq_len (windows * seq_len + 1 tokens below vocab), in
// documents of uneven length.
void write_dataset(const std::string& prefix, int64_t windows, int seq_len, int vocab) {
  IndexedDatasetWriter writer(prefix, IndexedDType::kUInt16);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> token(3, vocab - 1);
  int64_t left = windows * seq_len + 1;
  while (left > 0) {
    std::vector<int32_t> document(static_cast<size_t>(std::min<int64_t>(left, 45)));
    for (int32_t& t : document) t = token(rng);
    writer.add_document(document.data(), document.size());
    left -= static_cast<int64_t>(document.size());
  }
  writer.finalize();
}

// The value of "key": in a one-line JSON object.
double json_number(const std::string& text, const std::string& key) {
  const size_t at = text.find("\"" + key + "\": ");
  EXPECT_NE(at, std::string::npos) << key << " in " << text;
  return at == std::string::npos ? NAN : std::stod(text.substr(at + key.size() + 4));
}

// The Llama fixture's shape, training on `prefix` with its batch of 8 x 32.
std::string job_text(const std::string& prefix, int steps) {
  return str_cat(
      "model { arch: LLAMA vocab_size: 512 n_layer: 2 n_head: 4 n_kv_head: 2 n_embd: 64 ffn_hidden: 176 "
      "max_seq_len: 32 }\n"
      "train { steps: ",
      steps,
      " global_batch: 8 seq_len: 32 threads: 1 }\n"
      "optimizer { lr: 1e-3 warmup_steps: 0 }\n"
      "data { train_prefix: \"",
      prefix,
      "\" }\n"
      "checkpoint { every_steps: 0 }\n"
      "logging { log_every: 1 }\n");
}

TEST(EvalCli, LossEqualsTrainsLossOnTheSameWindowsInEveryLayout) {
  TempDir dir;
  const std::string data = dir.file("eight");
  write_dataset(data, 8, 32, 512);  // one global batch: train's first step reads every window once
  const std::string imported = dir.file("imported");
  auto r = run_command(tessera("import --input " + kFixture + " --out " + imported));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  // Train one step from the imported weights: its loss is taken before the update.
  const std::string job = dir.file("job.textproto");
  testing::write_text_file(job, job_text(data, 1));
  r = run_command(tessera("train --config " + job + " --run-dir " + dir.file("run") + " --init-from " + imported));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "loaded the weights of " + imported + "/checkpoints/step_00000000")) << r.output;
  std::ifstream metrics(dir.file("run") + "/metrics.jsonl");
  std::string first;
  std::getline(metrics, first);
  const double train_loss = json_number(first, "loss");
  EXPECT_EQ(json_number(first, "step"), 1);

  for (const auto& [ranks, layout] : std::vector<std::pair<int, std::string>>{
           {1, ""}, {2, "--set parallel.tp=2"}, {2, "--set parallel.pp=2"}, {2, "--set parallel.dp=2"},
           {4, "--set parallel.tp=2 --set parallel.pp=2"}}) {
    SCOPED_TRACE(layout);
    r = run_command(tessera("eval --json --checkpoint " + imported + " --data " + data + " " + layout, ranks));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const std::string line = r.output.substr(r.output.find('{'));
    EXPECT_EQ(json_number(line, "tokens"), 256);
    EXPECT_EQ(json_number(line, "left_out_windows"), 0);
    const double loss = json_number(line, "loss");
    // The same 256 token losses, summed in another order.
    EXPECT_LE(std::fabs(loss - train_loss), 1e-6 * train_loss) << line << " against train's " << train_loss;
    EXPECT_NEAR(json_number(line, "perplexity"), std::exp(loss), 1e-6 * std::exp(loss));
  }

  // The fixture's own first loss is on other tokens; the untrained model sits near ln(512) on these.
  EXPECT_NEAR(train_loss, std::log(512.0), 0.3);
}

TEST(EvalCli, WholeBatchesOnlyAndMaxTokens) {
  TempDir dir;
  const std::string data = dir.file("twenty");
  write_dataset(data, 20, 32, 512);
  const std::string imported = dir.file("imported");
  ASSERT_EQ(run_command(tessera("import --input " + kFixture + " --out " + imported)).exit_code, 0);
  auto r = run_command(tessera("eval --json --checkpoint " + imported + " --data " + data));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(json_number(r.output.substr(r.output.find('{')), "windows"), 16);  // two batches of 8
  EXPECT_EQ(json_number(r.output.substr(r.output.find('{')), "left_out_windows"), 4);
  r = run_command(tessera("eval --json --checkpoint " + imported + " --data " + data + " --max-tokens 300"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(json_number(r.output.substr(r.output.find('{')), "tokens"), 256);  // 9 windows fit: one batch

  // Fewer windows than one batch, a bad --max-tokens, a missing dataset, no --data: named, exit 2 (1 for data).
  r = run_command(tessera("eval --checkpoint " + imported + " --data " + data + " --max-tokens 100"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "fewer than one batch of train.global_batch = 8")) << r.output;
  r = run_command(tessera("eval --checkpoint " + imported + " --data " + data + " --max-tokens -5"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--max-tokens takes a positive number")) << r.output;
  r = run_command(tessera("eval --checkpoint " + imported + " --data " + dir.file("missing")));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "missing.idx")) << r.output;
  r = run_command(tessera("eval --checkpoint " + imported));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--data PREFIX")) << r.output;
  r = run_command(tessera("eval --checkpoint " + dir.file("nothing") + " --data " + data));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--checkpoint " + dir.file("nothing") + ": no such directory")) << r.output;
}

TEST(TrainInitFrom, NewRunFromWeightsThenItsOwnCheckpointOnRequeue) {
  TempDir dir;
  const std::string data = dir.file("data");
  write_dataset(data, 40, 32, 512);
  const std::string imported = dir.file("imported");
  ASSERT_EQ(run_command(tessera("import --input " + kFixture + " --out " + imported)).exit_code, 0);
  const std::string job = dir.file("job.textproto");
  testing::write_text_file(job, job_text(data, 4));
  const std::string run = dir.file("run");
  // First launch: no checkpoint of its own, so the weights come from --init-from; a step-2 checkpoint.
  auto r = run_command(tessera("train --config " + job + " --run-dir " + run + " --init-from " + imported +
                               " --resume latest --set train.steps=2 --set checkpoint.every_steps=2 --set parallel.tp=2",
                               2));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "loaded the weights of")) << r.output;
  // A requeue continues its own checkpoint; --init-from is ignored and says so.
  r = run_command(tessera("train --config " + job + " --run-dir " + run + " --init-from " + imported +
                          " --resume latest --set checkpoint.every_steps=2"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "resumed from " + run + "/checkpoints/step_00000002: step 2")) << r.output;
  EXPECT_TRUE(contains(r.output, "--init-from " + imported + " ignored")) << r.output;

  // Another model shape is refused; another batch and sequence length are the point of a new run.
  r = run_command(tessera("train --config " + job + " --run-dir " + dir.file("wide") + " --init-from " + imported +
                          " --set model.n_embd=128 --set train.steps=1"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "cannot load the weights of")) << r.output;
  EXPECT_TRUE(contains(r.output, "model.n_embd: the checkpoint has 64, this run 128")) << r.output;
  r = run_command(tessera("train --config " + job + " --run-dir " + dir.file("short") + " --init-from " + imported +
                          " --set train.seq_len=16 --set train.global_batch=4 --set train.steps=1"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = run_command(tessera("train --run-dir " + dir.file("x") + " --init-from " + imported));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--init-from needs --config")) << r.output;
}

}  // namespace
}  // namespace tessera

// `tessera eval`, `tessera generate` with text and `tessera train --init-from` as a user runs them: eval's loss over a
// dataset equals the loss train computes on the same windows from the same weights, in any layout; --init-from starts a
// new run from a checkpoint's weights (step 0, fresh optimizer) and yields to the run's own checkpoint on a requeue;
// the errors a user can make are named.
#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "core/check.h"
#include "launcher/common/human_format.h"
#include "launcher/data/indexed_dataset.h"
#include "launcher/data/multiple_choice_task.h"
#include "launcher/data/tokenizer.h"
#include "tests/cli_command.h"
#include "tests/run_command.h"
#include "tests/temp_dir.h"

namespace tessera {
namespace {

using testing::run_command;
using testing::TempDir;

const std::string kTessera = TESSERA_BINARY;
const std::string& kEnvironment = testing::kCliEnvironment;
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

  for (const auto& [ranks, layout] :
       std::vector<std::pair<int, std::string>>{{1, ""},
                                                {2, "--set parallel.tp=2"},
                                                {2, "--set parallel.pp=2"},
                                                {2, "--set parallel.dp=2"},
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
  // The progress on stderr (not a terminal here): its summary line, in windows of the total.
  r = run_command("TESSERA_PROGRESS=auto TESSERA_PROGRESS_INTERVAL_S=0.001 " +
                  tessera("eval --checkpoint " + imported + " --data " + data));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "eval: done, 16 windows, 512 tokens in ")) << r.output;
  EXPECT_EQ(r.output.find('\r'), std::string::npos) << r.output;
  for (const std::string& line : split_lines(r.output)) {
    if (line.rfind("eval: ", 0) == 0 && !contains(line, "done")) {
      EXPECT_TRUE(
          std::regex_match(line, std::regex(R"(eval: (8|16) windows of 16 windows \((50|100)%\), (256|512) tokens, )"
                                            R"([0-9.]+k? tokens/s, [0-9]+ s elapsed, ETA [0-9]+ s)")))
          << line;
    }
  }
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

// A real SentencePiece model of `vocab` pieces trained on a few lines.
std::string train_small_tokenizer(const TempDir& dir, int vocab) {
  std::string lines;
  for (int i = 0; i < 60; ++i) lines += str_cat("the quick brown fox ", i, " jumps over the lazy dog and sleeps\n");
  testing::write_text_file(dir.file("corpus.txt"), lines);
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      str_cat("--input=", dir.file("corpus.txt"), " --model_prefix=", dir.file("tok"), " --vocab_size=", vocab,
              " --model_type=bpe --character_coverage=1.0 --bos_id=1 --eos_id=2 --unk_id=0 --pad_id=-1 "
              "--minloglevel=2"));
  EXPECT_TRUE(status.ok()) << status.ToString();
  return dir.file("tok.model");
}

// The per-example lines' "loglik" arrays.
std::vector<std::vector<double>> read_logliks(const std::string& path) {
  std::vector<std::vector<double>> all;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    const size_t open = line.find("\"loglik\": [") + 11;
    std::istringstream numbers(line.substr(open, line.find(']', open) - open));
    std::vector<double> values;
    for (std::string number; std::getline(numbers, number, ',');) values.push_back(std::stod(number));
    all.push_back(values);
  }
  return all;
}

// A choice's log-likelihood is minus the losses of the positions that predict it: the same number as the total
// loss of [EOS] + context + choice minus that of [EOS] + context, each from `tessera eval --data` over a dataset
// of exactly that one sequence. acc and acc_norm follow from the log-likelihoods by hand.
TEST(EvalCli, MultipleChoiceLogLikelihoodsAreTheChoicesTokenLosses) {
  TempDir dir;
  const std::string tokenizer_path = train_small_tokenizer(dir, 60);
  const Tokenizer tokenizer(tokenizer_path, "test");
  const std::string imported = dir.file("imported");
  ASSERT_EQ(run_command(tessera("import --input " + kFixture + " --out " + imported)).exit_code, 0);
  struct Example {
    std::string context;
    std::vector<std::string> choices;
    int label;
  };
  const std::vector<Example> examples = {
      {"the quick brown fox", {" jumps over the lazy dog", " sleeps", " the"}, 0},
      {"the lazy dog", {" sleeps", " jumps over the quick brown fox and"}, 1},
  };
  std::string task;
  for (const Example& e : examples) {
    task += "{\"context\": \"" + e.context + "\", \"choices\": [";
    for (size_t c = 0; c < e.choices.size(); ++c) task += (c ? ", \"" : "\"") + e.choices[c] + "\"";
    task += str_cat("], \"label\": ", e.label, "}\n");
  }
  testing::write_text_file(dir.file("task.jsonl"), task);
  const std::string eval = "eval --checkpoint " + imported + " --set data.tokenizer=" + tokenizer_path + " --task " +
                           dir.file("task.jsonl") + " --json";
  auto r = run_command(tessera(eval + " --per-example " + dir.file("one.jsonl")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<std::vector<double>> loglik = read_logliks(dir.file("one.jsonl"));
  ASSERT_EQ(loglik.size(), examples.size());

  // The total loss of one sequence through eval --data: a dataset of exactly its tokens, one window of
  // seq_len = length - 1.
  int datasets = 0;
  auto total_loss = [&](const std::vector<int32_t>& tokens) {
    const std::string prefix = dir.file(str_cat("seq", datasets++));
    IndexedDatasetWriter writer(prefix, IndexedDType::kUInt16);
    writer.add_document(tokens.data(), tokens.size());
    writer.finalize();
    const int n = static_cast<int>(tokens.size()) - 1;
    const auto result = run_command(tessera(str_cat("eval --json --checkpoint ", imported, " --data ", prefix,
                                                    " --set train.global_batch=1 --set train.seq_len=", n)));
    EXPECT_EQ(result.exit_code, 0) << result.output;
    return json_number(result.output.substr(result.output.find('{')), "loss") * n;
  };
  int correct = 0, correct_norm = 0;
  for (size_t e = 0; e < examples.size(); ++e) {
    SCOPED_TRACE(examples[e].context);
    std::vector<int32_t> context{tokenizer.eos_id()};
    for (int id : tokenizer.encode(examples[e].context)) context.push_back(id);
    const double context_loss = total_loss(context);
    ASSERT_EQ(loglik[e].size(), examples[e].choices.size());
    int best = 0, best_norm = 0;
    for (size_t c = 0; c < examples[e].choices.size(); ++c) {
      std::vector<int32_t> full = context;
      for (int id : tokenizer.encode(examples[e].choices[c])) full.push_back(id);
      const double expected = -(total_loss(full) - context_loss);
      EXPECT_NEAR(loglik[e][c], expected, 1e-4 * std::fabs(expected)) << "choice " << c;
      if (loglik[e][c] > loglik[e][best]) best = static_cast<int>(c);
      auto norm = [&](size_t k) { return loglik[e][k] / static_cast<double>(examples[e].choices[k].size()); };
      if (norm(c) > norm(best_norm)) best_norm = static_cast<int>(c);
    }
    correct += best == examples[e].label;
    correct_norm += best_norm == examples[e].label;
  }
  const std::string line = r.output.substr(r.output.find('{'));
  EXPECT_EQ(json_number(line, "examples"), 2);
  EXPECT_DOUBLE_EQ(json_number(line, "acc"), correct / 2.0);
  EXPECT_DOUBLE_EQ(json_number(line, "acc_norm"), correct_norm / 2.0);

  // The same numbers in other layouts.
  for (const auto& [ranks, layout] :
       std::vector<std::pair<int, std::string>>{{2, "--set parallel.tp=2"},
                                                {2, "--set parallel.pp=2"},
                                                {2, "--set parallel.dp=2 --set train.global_batch=2"}}) {
    SCOPED_TRACE(layout);
    r = run_command(tessera(eval + " --per-example " + dir.file("other.jsonl") + " " + layout, ranks));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const std::vector<std::vector<double>> other = read_logliks(dir.file("other.jsonl"));
    ASSERT_EQ(other.size(), loglik.size());
    for (size_t e = 0; e < other.size(); ++e)
      for (size_t c = 0; c < other[e].size(); ++c)
        EXPECT_NEAR(other[e][c], loglik[e][c], 1e-5 * std::fabs(loglik[e][c]));
  }

  // During training: logging.eval_task is scored at every evaluation, into the log and metrics.jsonl; from the
  // same weights (step 0's evaluation comes after step 1's update, so compare its accuracy's form only).
  testing::write_text_file(dir.file("train.textproto"),
                           "model { arch: LLAMA vocab_size: 512 n_layer: 2 n_head: 4 n_kv_head: 2 n_embd: 64 "
                           "ffn_hidden: 176 max_seq_len: 32 }\n"
                           "train { steps: 2 global_batch: 8 seq_len: 32 threads: 1 }\n"
                           "optimizer { lr: 1e-3 }\n"
                           "data { mock: true tokenizer: \"" +
                               tokenizer_path +
                               "\" }\n"
                               "checkpoint { every_steps: 0 save_on_exit: false }\n"
                               "logging { eval_every: 1 eval_task: \"" +
                               dir.file("task.jsonl") + "\" }\n");
  r = run_command(tessera("train --config " + dir.file("train.textproto") + " --run-dir " + dir.file("trained")));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "step     1/2 | task acc ")) << r.output;
  EXPECT_TRUE(contains(testing::read_text_file(dir.file("trained") + "/metrics.jsonl"), "\"task_acc_norm\": "));
  r = run_command(tessera("train --config " + dir.file("train.textproto") + " --run-dir " + dir.file("x") +
                          " --set logging.eval_every=0"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "logging.eval_task is scored at every evaluation")) << r.output;

  // Bad task files: named with their line, exit 1.
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"label\": 0}\n\n", "task.jsonl:2: an empty line"},
      {"{\"context\": \"a\", \"choices\": [\" b\"], \"label\": 0}\n", "1 choice(s)"},
      {"{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"label\": 2}\n", "label 2 is not the index"},
      {"{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"lable\": 1}\n", "task.jsonl:1: not a"},
      {"{\"context\": \"a\", \"choices\": [\" b\", \"\"], \"label\": 0}\n", "choices[1] has no tokens"},
  };
  for (const auto& [text, expected] : bad) {
    SCOPED_TRACE(expected);
    testing::write_text_file(dir.file("task.jsonl"), text);
    r = run_command(tessera(eval));
    EXPECT_EQ(r.exit_code, 1) << r.output;
    EXPECT_TRUE(contains(r.output, expected)) << r.output;
  }
  // A task needs the tokenizer.
  r = run_command(tessera("eval --checkpoint " + imported + " --task " + dir.file("task.jsonl")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "names no data.tokenizer")) << r.output;
}

// Text prompts through a real SentencePiece model: the prompt's ids are the tokenizer's, the text is the
// decoded ids, a prompts file gives one JSON line per prompt, and the streamed text starts with the prompt.
TEST(GenerateCli, TextPromptsThroughTheTokenizer) {
  TempDir dir;
  const std::string tokenizer_path = train_small_tokenizer(dir, 60);
  const Tokenizer tokenizer(tokenizer_path, "test");
  const std::string imported = dir.file("imported");
  ASSERT_EQ(run_command(tessera("import --input " + kFixture + " --out " + imported)).exit_code, 0);
  const std::string generate = "generate --checkpoint " + imported + " --set data.tokenizer=" + tokenizer_path +
                               " --max-new-tokens 6 --temperature 0 ";
  auto r = run_command(tessera(generate + "--prompt 'the quick brown' --json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string ids;
  for (int id : tokenizer.encode("the quick brown")) ids += (ids.empty() ? "" : ",") + std::to_string(id);
  EXPECT_TRUE(contains(r.output, "\"prompt_ids\":[" + ids + "]")) << r.output;
  EXPECT_TRUE(contains(r.output, "\"text\":\"")) << r.output;
  // The same prompt given as ids and as text continues the same way.
  const auto by_ids = run_command(tessera(generate + "--prompt-ids " + ids + " --json"));
  ASSERT_EQ(by_ids.exit_code, 0) << by_ids.output;
  const auto ids_of = [](const std::string& output) {
    const size_t at = output.find("\"ids\":[");
    return at == std::string::npos ? std::string() : output.substr(at, output.find(']', at) - at);
  };
  EXPECT_EQ(ids_of(r.output), ids_of(by_ids.output));
  EXPECT_FALSE(ids_of(r.output).empty()) << r.output;

  testing::write_text_file(dir.file("prompts.txt"), "the lazy dog\nthe quick brown fox\n");
  r = run_command(tessera(generate + "--prompts-file " + dir.file("prompts.txt") + " --json"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  int lines = 0;
  for (size_t at = r.output.find("{\"prompt_ids\""); at != std::string::npos;
       at = r.output.find("{\"prompt_ids\"", at + 1))
    ++lines;
  EXPECT_EQ(lines, 2) << r.output;
  // Streamed text: a line with the prompt, then its continuation (the progress lines go to stderr).
  r = run_command("(" + tessera(generate + "--prompt 'the lazy dog' 2>" + dir.file("stderr.txt")) + ")");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("the lazy dog", 0), 0u) << r.output;
  EXPECT_GT(r.output.size(), std::string("the lazy dog\n").size()) << r.output;
  // A FIFO as the prompts file is refused, not waited on.
  ASSERT_EQ(mkfifo(dir.file("fifo").c_str(), 0600), 0);
  r = run_command(tessera(generate + "--prompts-file " + dir.file("fifo")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--prompts-file " + dir.file("fifo"))) << r.output;
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
  auto r =
      run_command(tessera("train --config " + job + " --run-dir " + run + " --init-from " + imported +
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

// Task files: what prepare writes, eval reads back field for field (escapes and UTF-8 too); lines that are not
// exactly an example are refused with the file and line.
TEST(MultipleChoiceTask, ReadsWhatItWritesAndRefusesOtherLines) {
  TempDir dir;
  std::vector<tasks::MultipleChoiceExample> examples(2);
  examples[0].set_context("a \"quoted\" line\twith a tab and café");
  examples[0].add_choices(" yes");
  examples[0].add_choices(" no\n");
  examples[0].set_label(1);
  examples[1].set_context("");
  for (const char* choice : {" a", " b", " c"}) examples[1].add_choices(choice);
  const std::string path = dir.file("task.jsonl");
  write_multiple_choice_task(path, examples);
  const std::string text = testing::read_text_file(path);
  EXPECT_TRUE(
      contains(text, R"({"context":"a \"quoted\" line\twith a tab and café","choices":[" yes"," no\n"],"label":1})"))
      << text;
  const std::vector<tasks::MultipleChoiceExample> back = read_multiple_choice_task(path);
  ASSERT_EQ(back.size(), 2u);
  for (size_t i = 0; i < back.size(); ++i) EXPECT_EQ(back[i].SerializeAsString(), examples[i].SerializeAsString()) << i;

  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"context": "a", "choices": [" b", " c"], "label": "1"})", "\"label\" must be an integer"},
      {R"({"context": "a", "choices": [" b", " c"], "label": 4294967296})", "\"label\" must be an integer"},
      {R"({"context": "a", "choices": [" b", 3], "label": 0})", "\"choices\" must be an array of strings"},
      {R"({"context": 1, "choices": [" b", " c"], "label": 0})", "\"context\" must be a string"},
      {R"({"context": "a", "choices": [" b", " c"], "label": 0, "label": 1})", "duplicate key \"label\""},
      {R"({"context": "a", "choices": [" b", " c"], "label": 0)", "not valid JSON at byte"},
      {R"(["a", [" b", " c"], 0])", "not a {\"context\""},
  };
  for (const auto& [line, expected] : bad) {
    SCOPED_TRACE(line);
    testing::write_text_file(path, text + line + "\n");
    const std::string message = testing::error_message<DataError>([&] { read_multiple_choice_task(path); });
    EXPECT_TRUE(contains(message, path + ":3: ")) << message;
    EXPECT_TRUE(contains(message, expected)) << message;
  }
}

}  // namespace
}  // namespace tessera

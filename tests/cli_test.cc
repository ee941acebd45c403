// The tessera command as a user runs it: errors a user can cause get a message naming the problem and a
// non-zero exit (never a crash or a raw library error), and a short training run on generated tokens writes
// metrics.jsonl with a falling loss.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "launcher/data/indexed_dataset.h"
#include "tests/run_command.h"

namespace {

namespace fs = std::filesystem;
using tessera::testing::run_command;

const std::string kTessera = TESSERA_BINARY;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("tessera_cli_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& text) {
    fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }

  // A tiny valid job on generated tokens, with its run directory inside the test's directory.
  std::string tiny_job(const std::string& extra = "") {
    return write("job.textproto",
                 "model { vocab_size: 64 n_layer: 1 n_head: 2 n_embd: 16 max_seq_len: 16 }\n"
                 "train { steps: 30 global_batch: 8 seq_len: 16 threads: 1 }\n"
                 "optimizer { lr: 1e-2 warmup_steps: 3 }\n"
                 "data { mock: true }\n"
                 "logging { log_every: 10 run_dir: \"" +
                     (dir_ / "run").string() + "\" }\n" + extra);
  }

  fs::path dir_;
};

TEST_F(CliTest, NoArgumentsPrintsUsage) {
  auto r = run_command(kTessera);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("Usage: tessera"), std::string::npos) << r.output;
}

// The help of every command and the exit-code table: tests/command_line_test.cc.

TEST_F(CliTest, UnknownCommand) {
  auto r = run_command(kTessera + " trian");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("unknown command 'trian'"), std::string::npos) << r.output;
}

TEST_F(CliTest, MissingConfigFile) {
  auto r = run_command(kTessera + " train --config " + (dir_ / "nope.textproto").string());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("cannot read config"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("nope.textproto"), std::string::npos) << r.output;
}

TEST_F(CliTest, MalformedTextproto) {
  std::string path = write("bad.textproto", "model { vocab_size: 64 n_layer: 1\n");
  auto r = run_command(kTessera + " train --config " + path);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("bad.textproto:"), std::string::npos) << r.output;
}

TEST_F(CliTest, UnknownFieldInOverride) {
  auto r = run_command(kTessera + " train --config " + tiny_job() + " --set model.n_embed=32");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("n_embed"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("n_embd"), std::string::npos) << r.output;
}

TEST_F(CliTest, InvalidModelShape) {
  auto r = run_command(kTessera + " train --config " + tiny_job() + " --set model.n_head=3");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("model.n_embd"), std::string::npos) << r.output;
}

TEST_F(CliTest, LayoutThatDoesNotMatchTheWorld) {
  auto r = run_command(kTessera + " train --config " + tiny_job() + " --set parallel.tp=2");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("parallel.tp"), std::string::npos) << r.output;
}

TEST_F(CliTest, MissingDataset) {
  std::string job = write("job.textproto",
                          "model { vocab_size: 64 n_layer: 1 n_head: 2 n_embd: 16 max_seq_len: 16 }\n"
                          "train { steps: 2 global_batch: 2 seq_len: 16 threads: 1 }\n"
                          "data { train_prefix: \"" +
                              (dir_ / "missing").string() + "\" }\n");
  auto r = run_command(kTessera + " train --config " + job);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("missing"), std::string::npos) << r.output;
}

TEST_F(CliTest, TokenIdsBeyondTheVocabulary) {
  {
    tessera::IndexedDatasetWriter writer((dir_ / "big").string(), tessera::IndexedDType::kUInt16);
    std::vector<int32_t> doc(200);
    for (size_t i = 0; i < doc.size(); ++i) doc[i] = static_cast<int32_t>(i % 50);
    doc[123] = 99;  // the model below has 64 tokens
    writer.add_document(doc.data(), doc.size());
    writer.finalize();
  }
  std::string job = write("job.textproto",
                          "model { vocab_size: 64 n_layer: 1 n_head: 2 n_embd: 16 max_seq_len: 16 }\n"
                          "train { steps: 2 global_batch: 2 seq_len: 16 threads: 1 }\n"
                          "data { train_prefix: \"" +
                              (dir_ / "big").string() + "\" }\n");
  auto r = run_command(kTessera + " train --config " + job);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("99"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("big"), std::string::npos) << r.output;
}

TEST_F(CliTest, ADatasetThatIsAFifoOrADirectoryIsRefusedWithoutHanging) {
  {
    tessera::IndexedDatasetWriter writer((dir_ / "data").string(), tessera::IndexedDType::kUInt16);
    std::vector<int32_t> doc(200, 5);
    writer.add_document(doc.data(), doc.size());
    writer.finalize();
  }
  const std::string job = write("job.textproto",
                                "model { vocab_size: 64 n_layer: 1 n_head: 2 n_embd: 16 max_seq_len: 16 }\n"
                                "train { steps: 2 global_batch: 2 seq_len: 16 threads: 1 }\n"
                                "data { train_prefix: \"" +
                                    (dir_ / "data").string() + "\" }\n");
  const std::string bin = (dir_ / "data.bin").string();
  fs::remove(bin);
  ASSERT_EQ(::mkfifo(bin.c_str(), 0600), 0);
  auto r = run_command("timeout 60 " + kTessera + " train --config " + job);
  EXPECT_EQ(r.exit_code, 1) << r.output;  // 124 would be the timeout: open(2) blocked on the FIFO
  EXPECT_NE(r.output.find(bin + ": is a FIFO (named pipe), not a regular file"), std::string::npos) << r.output;
  fs::remove(bin);
  fs::create_directory(bin);
  r = run_command("timeout 60 " + kTessera + " train --config " + job);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find(bin + ": is a directory, not a file"), std::string::npos) << r.output;
}

TEST_F(CliTest, TheTokenizerIsCheckedWhenTheJobStarts) {
  const std::string missing = (dir_ / "missing.model").string();
  auto r = run_command(kTessera + " train --config " + tiny_job() + " --set data.tokenizer=" + missing);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("data.tokenizer '" + missing + "': does not exist"), std::string::npos) << r.output;
  const std::string garbage = write("garbage.model", "not a sentencepiece model");
  r = run_command(kTessera + " train --config " + tiny_job() + " --set data.tokenizer=" + garbage);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("data.tokenizer '" + garbage + "': not a SentencePiece model"), std::string::npos)
      << r.output;
  r = run_command(kTessera + " train --config " + tiny_job() + " --set data.tokenizer=" + dir_.string());
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("is a directory, not a file"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir_ / "run")) << "a job that failed its checks wrote to its run directory";
}

TEST_F(CliTest, InspectOfAMissingPathSaysInspect) {
  auto r = run_command(kTessera + " inspect /nonexistent");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("tessera inspect /nonexistent: no such directory"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("--resume"), std::string::npos) << r.output;
}

TEST_F(CliTest, TrainsOnMockDataAndWritesMetrics) {
  auto r = run_command(kTessera + " train --config " + tiny_job());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("step    10/30 | loss"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("done: 30 steps"), std::string::npos) << r.output;
  std::ifstream metrics(dir_ / "run" / "metrics.jsonl");
  ASSERT_TRUE(metrics.good());
  std::vector<double> losses;
  std::string line;
  while (std::getline(metrics, line)) {
    for (const char* key : {"\"step\"", "\"loss\"", "\"lr\"", "\"grad_norm\"", "\"tokens_per_s\""})
      EXPECT_NE(line.find(key), std::string::npos) << line;
    size_t at = line.find("\"loss\": ");
    losses.push_back(std::stod(line.substr(at + 8)));
  }
  ASSERT_EQ(losses.size(), 30u);
  // ln(64) = 4.16 at the start; the Markov chain is learnable well below that.
  EXPECT_GT(losses.front(), 4.0);
  EXPECT_LT(losses.back(), losses.front() - 0.5);
  EXPECT_TRUE(fs::exists(dir_ / "run" / "config.textproto"));
}

}  // namespace

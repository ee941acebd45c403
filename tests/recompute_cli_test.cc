// Activation recomputation through `tessera train` (docs/memory.md): with train.recompute SELECTIVE, FULL and
// FULL every 2nd block, every step's loss and gradient norm (metrics.jsonl writes the shortest text that reads
// back as the same double) and the final weights (the f32 safetensors file `tessera export` writes from the last
// checkpoint) are byte for byte those of recompute NONE: GPT-2 and Llama, f32 and bf16, on one rank and over two
// (tp=2, pp=2 with micro-batches, dp=2, dp=2 with ZeRO-1, tp=2 with sequence parallelism, whose collectives the
// recomputation re-runs). The printed activation memory shrinks as it should, and sequence parallelism shrinks it.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/check.h"
#include "tests/cli_command.h"
#include "tests/run_command.h"
#include "tests/temp_dir.h"

namespace tessera {
namespace {

using testing::run_command;
using testing::TempDir;

const std::string& kEnvironment = testing::kCliEnvironment;

std::string tessera(const std::string& args, int ranks) { return testing::tessera_cli(args, ranks); }

// Three blocks, so that FULL every 2nd block recomputes blocks 0 and 2 and stores block 1, and a two-stage
// pipeline splits them 2 + 1. A high learning rate, so that any difference in a gradient shows in the weights.
std::string job_text(bool llama, bool bf16) {
  const std::string model = llama ? "arch: LLAMA vocab_size: 96 n_layer: 3 n_head: 4 n_kv_head: 2 n_embd: 32 "
                                    "ffn_hidden: 48 max_seq_len: 16"
                                  : "vocab_size: 96 n_layer: 3 n_head: 4 n_embd: 32 max_seq_len: 16";
  return str_cat("model { ", model, bf16 ? " dtype: BF16" : "",
                 " }\n"
                 "train { steps: 3 global_batch: 8 seq_len: 16 threads: 1 }\n"
                 "optimizer { lr: 1e-2 warmup_steps: 0 }\n"
                 "data { mock: true }\n"
                 "logging { log_every: 1 }\n");
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The text of `key` in every row of RUN_DIR/metrics.jsonl.
std::vector<std::string> column(const std::string& run_dir, const std::string& key) {
  std::ifstream metrics(run_dir + "/metrics.jsonl");
  std::vector<std::string> values;
  const std::string quoted = "\"" + key + "\": ";
  for (std::string line; std::getline(metrics, line);) {
    const size_t at = line.find(quoted);
    if (at == std::string::npos) continue;
    const size_t start = at + quoted.size();
    values.push_back(line.substr(start, line.find_first_of(",}", start) - start));
  }
  return values;
}

struct TrainedRun {
  std::vector<std::string> losses, grad_norms;
  std::string weights;  // model.safetensors of the final checkpoint
  std::string memory;   // the "activation memory: ..." line
};

TrainedRun train(const TempDir& dir, const std::string& name, bool llama, bool bf16, int ranks,
                 const std::string& settings) {
  const std::string job = dir.file(name + ".textproto");
  testing::write_text_file(job, job_text(llama, bf16));
  const std::string run_dir = dir.file(name);
  const auto r = run_command(tessera("train --config " + job + " --run-dir " + run_dir + " " + settings, ranks));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  TrainedRun run;
  run.losses = column(run_dir, "loss");
  run.grad_norms = column(run_dir, "grad_norm");
  const size_t at = r.output.find("activation memory: ");
  if (at != std::string::npos) run.memory = r.output.substr(at, r.output.find('\n', at) - at);
  const auto e = run_command(kEnvironment + TESSERA_BINARY + " export --checkpoint " + run_dir + " --format hf --out " +
                             dir.file(name + "-hf"));
  EXPECT_EQ(e.exit_code, 0) << e.output;
  run.weights = read_file(dir.file(name + "-hf/model.safetensors"));
  return run;
}

struct Case {
  const char* name;
  bool llama, bf16;
  int ranks;
  const char* layout;
};

class Recompute : public ::testing::TestWithParam<Case> {};

TEST_P(Recompute, LossesGradientNormsAndWeightsAreBitIdenticalToNone) {
  const Case& c = GetParam();
  TempDir dir;
  const TrainedRun none = train(dir, "none", c.llama, c.bf16, c.ranks, c.layout);
  ASSERT_EQ(none.losses.size(), 3u);
  ASSERT_EQ(none.grad_norms.size(), 3u);
  ASSERT_GT(none.weights.size(), 1000u);
  EXPECT_NE(none.memory.find("recompute NONE)"), std::string::npos) << none.memory;
  const bool sequence_parallel = std::string(c.layout).find("sequence_parallel=true") != std::string::npos;
  EXPECT_EQ(none.memory.find("sequence parallel; ") != std::string::npos, sequence_parallel) << none.memory;
  for (const char* mode : {"SELECTIVE", "FULL", "FULL every 2"}) {
    const std::string m = mode;
    const std::string settings =
        m == "FULL every 2" ? "--set train.recompute=FULL --set train.recompute_every=2" : "--set train.recompute=" + m;
    const TrainedRun run =
        train(dir, m == "FULL every 2" ? "full2" : m, c.llama, c.bf16, c.ranks, std::string(c.layout) + " " + settings);
    SCOPED_TRACE(mode);
    EXPECT_EQ(run.losses, none.losses);
    EXPECT_EQ(run.grad_norms, none.grad_norms);
    EXPECT_TRUE(run.weights == none.weights) << "final weights differ from recompute NONE's";
    EXPECT_NE(run.memory.find("recompute " + m + "; NONE would be"), std::string::npos) << run.memory;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, Recompute,
    ::testing::Values(
        Case{"gpt2", false, false, 1, ""}, Case{"gpt2_tp2", false, false, 2, "--set parallel.tp=2"},
        Case{"gpt2_pp2_mb2", false, false, 2, "--set parallel.pp=2 --set parallel.micro_batches=2"},
        Case{"gpt2_dp2_mb2", false, false, 2, "--set parallel.dp=2 --set parallel.micro_batches=2"},
        Case{"gpt2_dp2_zero1", false, false, 2, "--set parallel.dp=2 --set parallel.zero_stage=1"},
        Case{"gpt2_bf16", false, true, 1, ""}, Case{"gpt2_bf16_tp2", false, true, 2, "--set parallel.tp=2"},
        Case{"gpt2_bf16_pp2_mb2", false, true, 2, "--set parallel.pp=2 --set parallel.micro_batches=2"},
        Case{"llama", true, false, 1, ""}, Case{"llama_tp2", true, false, 2, "--set parallel.tp=2"},
        Case{"llama_pp2_mb2", true, false, 2, "--set parallel.pp=2 --set parallel.micro_batches=2"},
        Case{"llama_dp2_zero1", true, false, 2, "--set parallel.dp=2 --set parallel.zero_stage=1"},
        Case{"llama_bf16", true, true, 1, ""}, Case{"llama_bf16_tp2", true, true, 2, "--set parallel.tp=2"},
        Case{"llama_bf16_pp2_mb2", true, true, 2, "--set parallel.pp=2 --set parallel.micro_batches=2"},
        Case{"gpt2_tp2_sp", false, false, 2, "--set parallel.tp=2 --set parallel.sequence_parallel=true"},
        Case{"llama_bf16_tp2_sp", true, true, 2, "--set parallel.tp=2 --set parallel.sequence_parallel=true"}),
    [](const ::testing::TestParamInfo<Case>& info) { return std::string(info.param.name); });

// The bytes the line reports: FULL stores less than SELECTIVE, which stores less than NONE, and both name NONE's.
double bytes_in(const std::string& text, size_t at) {
  const double value = std::stod(text.substr(at));
  const char u = text[text.find_first_of("kMGB", at)];  // human_bytes: decimal units
  return value * (u == 'k' ? 1e3 : u == 'M' ? 1e6 : u == 'G' ? 1e9 : 1.0);
}

TEST(RecomputeMemory, FullStoresLessThanSelectiveWhichStoresLessThanNone) {
  TempDir dir;
  const std::string job = dir.file("job.textproto");
  testing::write_text_file(job,
                           "model { vocab_size: 96 n_layer: 4 n_head: 4 n_embd: 64 max_seq_len: 64 }\n"
                           "train { steps: 1 global_batch: 8 seq_len: 64 threads: 1 }\n"
                           "data { mock: true }\ncheckpoint { save_on_exit: false }\n");
  std::vector<double> totals, nones;
  for (const char* mode : {"NONE", "SELECTIVE", "FULL"}) {
    const auto r = run_command(
        tessera(str_cat("train --config ", job, " --run-dir ", dir.file(mode), " --set train.recompute=", mode), 1));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const size_t at = r.output.find("activation memory: ");
    ASSERT_NE(at, std::string::npos) << r.output;
    totals.push_back(bytes_in(r.output, at + 19));
    const size_t none = r.output.find("NONE would be ", at);
    nones.push_back(none == std::string::npos ? totals.back() : bytes_in(r.output, none + 14));
  }
  EXPECT_LT(totals[2], totals[1]);
  EXPECT_LT(totals[1], totals[0]);
  EXPECT_EQ(nones[1], totals[0]);
  EXPECT_EQ(nones[2], totals[0]);
}

// Sequence parallelism over tp=2 keeps the norm and residual activations of half the tokens on each rank: the
// arena falls, by less than half (attention and the MLP's hidden layer still see every token).
TEST(RecomputeMemory, SequenceParallelStoresLess) {
  TempDir dir;
  const std::string job = dir.file("job.textproto");
  testing::write_text_file(job,
                           "model { vocab_size: 96 n_layer: 4 n_head: 4 n_embd: 64 max_seq_len: 64 }\n"
                           "train { steps: 1 global_batch: 8 seq_len: 64 threads: 1 }\n"
                           "data { mock: true }\ncheckpoint { save_on_exit: false }\n");
  std::vector<double> totals;
  for (const char* sequence_parallel : {"false", "true"}) {
    const auto r =
        run_command(tessera(str_cat("train --config ", job, " --run-dir ", dir.file(sequence_parallel),
                                    " --set parallel.tp=2 --set parallel.sequence_parallel=", sequence_parallel),
                            2));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const size_t at = r.output.find("activation memory: ");
    ASSERT_NE(at, std::string::npos) << r.output;
    totals.push_back(bytes_in(r.output, at + 19));
  }
  EXPECT_LT(totals[1], totals[0]);
  EXPECT_GT(totals[1], totals[0] / 2);
}

}  // namespace
}  // namespace tessera

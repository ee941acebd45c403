// Checkpoints through the tessera command as a user runs it, under mpirun: a run saved in one layout and
// resumed in another continues the uninterrupted run's loss trajectory (bit for bit in the same layout,
// within 1e-5 otherwise); a save killed at any point leaves the previous checkpoint as latest and loadable;
// SIGTERM on one rank gives a final checkpoint and exit 3 (requeue), and `--resume auto` continues it; a run
// directory that holds a run is refused without --resume; damaged checkpoints are named and `--resume
// latest` falls back; a different model shape, batch or tokenizer is refused; imported weights train.
#include <gtest/gtest.h>
#include <sentencepiece_trainer.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/param_spec.h"
#include "launcher/checkpoints/checkpoint_layout.h"
#include "launcher/checkpoints/checkpoint_manifest.h"
#include "launcher/commands/fixture.h"
#include "launcher/common/config.h"
#include "launcher/common/hdf5_file.h"
#include "launcher/run/job.h"
#include "models/gpt2/gpt2_model.h"
#include "tests/cli_command.h"
#include "tests/run_command.h"
#include "tests/temp_dir.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using testing::run_command;
using testing::TempDir;

const std::string kTessera = TESSERA_BINARY;
const std::string& kEnvironment = testing::kCliEnvironment;

// The tiny mock-data job: each run takes well under a second.
const std::string kJob =
    "model { vocab_size: 64 n_layer: 2 n_head: 4 n_embd: 16 max_seq_len: 16 }\n"
    "train { steps: 6 global_batch: 8 seq_len: 16 threads: 1 }\n"
    "optimizer { lr: 1e-2 warmup_steps: 2 }\n"
    "data { mock: true }\n"
    "checkpoint { every_steps: 3 keep_last: 0 }\n"
    "logging { log_every: 100 }\n";

struct RunLayout {
  int tp = 1, pp = 1, dp = 1;
  bool async = false;  // how this layout saves (loading is the same either way)
  int zero = 0;        // parallel.zero_stage
  int ranks() const { return tp * pp * dp; }
  bool same_layout(const RunLayout& other) const {
    return tp == other.tp && pp == other.pp && dp == other.dp && zero == other.zero;
  }
  std::string name() const {
    return str_cat("(", tp, ",", pp, ",", dp, ")", zero > 0 ? str_cat(" zero-", zero) : "", async ? " async" : "");
  }
};

// The layouts of the resume matrix (X saves after step 3, Y resumes). Every pair of the first kAllPairs
// layouts runs; each later one (pipeline, ZeRO-1, ZeRO-2) resumes its own checkpoint, (1,1,1)'s and the other
// later ones', and (1,1,1) resumes its checkpoint: ZeRO-2 <-> ZeRO-1 and ZeRO-2 <-> no ZeRO both ways. Add
// layouts at the end.
const RunLayout kLayouts[] = {{1, 1, 1, false},    {2, 1, 1, true},   {1, 1, 2, false}, {2, 1, 2, true},
                              {1, 1, 4, false},    {4, 1, 1, false},  {1, 2, 1, true},  {1, 2, 2, false, 1},
                              {1, 1, 2, false, 2}, {1, 2, 2, true, 2}};
constexpr size_t kAllPairs = 6;

bool in_matrix(size_t saved, size_t resumed) {
  const bool core = saved < kAllPairs && resumed < kAllPairs;
  const bool extra = saved >= kAllPairs && resumed >= kAllPairs;
  return core || extra || saved == 0 || resumed == 0;
}

// `tessera train` in a layout, with extra arguments: under mpirun, or alone (as MPI singleton) on one rank.
std::string train_command(const std::string& job, const RunLayout& layout, const std::string& run_dir,
                          const std::string& extra = "") {
  const std::string launcher =
      layout.ranks() == 1 ? std::string() : str_cat(TESSERA_MPIEXEC, " --oversubscribe -np ", layout.ranks(), " ");
  return str_cat(kEnvironment, launcher, kTessera, " train --config ", job, " --set parallel.tp=", layout.tp,
                 " --set parallel.pp=", layout.pp, " --set parallel.dp=", layout.dp,
                 " --set parallel.zero_stage=", layout.zero,
                 " --set checkpoint.async=", layout.async ? "true" : "false", " --run-dir ", run_dir, " ", extra);
}

// Runs the commands, `parallel` at a time (the runs mostly wait on process start-up), in order of results.
std::vector<testing::CommandResult> run_all(const std::vector<std::string>& commands, int parallel = 3) {
  std::vector<testing::CommandResult> results(commands.size());
  std::atomic<size_t> next{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < parallel; ++w) {
    workers.emplace_back([&] {
      for (size_t i = next++; i < commands.size(); i = next++) results[i] = run_command(commands[i]);
    });
  }
  for (std::thread& worker : workers) worker.join();
  return results;
}

std::string tessera(const std::string& args) { return kEnvironment + kTessera + " " + args; }

// step -> the metrics row's "loss" and "grad_norm" as printed (every digit of the double).
struct Row {
  std::string loss, grad_norm;
};
std::string field(const std::string& line, const std::string& key) {
  const std::string quoted = "\"" + key + "\": ";
  const size_t start = line.find(quoted);
  if (start == std::string::npos) return "";
  const size_t begin = start + quoted.size();
  return line.substr(begin, line.find_first_of(",}", begin) - begin);
}
std::map<int, Row> read_metrics(const std::string& run_dir) {
  std::map<int, Row> rows;
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    const int step = std::stoi(field(line, "step"));
    EXPECT_EQ(rows.count(step), 0u) << "step " << step << " twice in " << run_dir;
    rows[step] = {field(line, "loss"), field(line, "grad_norm")};
  }
  return rows;
}

std::string write_job(const TempDir& dir, const std::string& text = kJob) {
  const std::string path = dir.file("job.textproto");
  testing::write_text_file(path, text);
  return path;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Every tensor of two checkpoints' model.h5, bit for bit.
void expect_same_tensors(const std::string& a, const std::string& b) {
  H5Reader first(a + "/model.h5"), second(b + "/model.h5");
  ModelConfig model;
  model.vocab_size = 64;
  model.n_layer = 2;
  model.n_head = 4;
  model.n_embd = 16;
  model.max_seq_len = 16;
  for (const ParamSpec& spec : gpt2_param_specs(model)) {
    for (StateKind kind : kStateKinds) {
      const std::string name = std::string(state_kind_group(kind)) + "/" + spec.name;
      const std::vector<float> x = first.read_f32(name), y = second.read_f32(name);
      ASSERT_EQ(x.size(), y.size()) << name;
      EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)), 0) << name << " differs";
    }
  }
}

TEST(CheckpointCli, EveryLayoutResumesEveryOthersCheckpoint) {
  TempDir dir;
  const std::string job = write_job(dir);
  const size_t n = std::size(kLayouts);
  auto reference_dir = [&](size_t x) { return dir.file("ref" + std::to_string(x)); };
  auto resume_dir = [&](size_t x, size_t y) { return dir.file(str_cat("resume", x, "_", y)); };
  auto checkpoint_of = [&](size_t x) { return reference_dir(x) + "/checkpoints/step_00000003"; };
  // Uninterrupted runs: 6 steps, checkpoints after steps 3 and 6.
  std::vector<std::string> commands;
  for (size_t x = 0; x < n; ++x) commands.push_back(train_command(job, kLayouts[x], reference_dir(x)));
  std::vector<testing::CommandResult> results = run_all(commands);
  std::vector<std::map<int, Row>> reference(n);
  for (size_t x = 0; x < n; ++x) {
    ASSERT_EQ(results[x].exit_code, 0) << kLayouts[x].name() << "\n" << results[x].output;
    reference[x] = read_metrics(reference_dir(x));
    ASSERT_EQ(reference[x].size(), 6u);
  }
  // Every pair resumes after step 3; only same-layout runs save at the end, to compare every tensor.
  commands.clear();
  std::vector<std::pair<size_t, size_t>> pairs;
  for (size_t x = 0; x < n; ++x) {
    for (size_t y = 0; y < n; ++y) {
      if (!in_matrix(x, y)) continue;
      pairs.emplace_back(x, y);
      const bool same = kLayouts[x].same_layout(kLayouts[y]);
      commands.push_back(train_command(job, kLayouts[y], resume_dir(x, y),
                                       "--resume " + checkpoint_of(x) + " --set checkpoint.every_steps=0" +
                                           (same ? "" : " --set checkpoint.save_on_exit=false")));
    }
  }
  results = run_all(commands);
  for (size_t i = 0; i < pairs.size(); ++i) {
    const auto [x, y] = pairs[i];
    const RunLayout& saved = kLayouts[x];
    const RunLayout& resumed = kLayouts[y];
    SCOPED_TRACE("saved in " + saved.name() + ", resumed in " + resumed.name());
    const testing::CommandResult& r = results[i];
    ASSERT_EQ(r.exit_code, 0) << r.output;
    ASSERT_TRUE(contains(r.output, "resumed from " + checkpoint_of(x) + ": step 3")) << r.output;
    const std::map<int, Row> rows = read_metrics(resume_dir(x, y));
    ASSERT_EQ(rows.size(), 3u) << "steps 4 to 6";
    for (const auto& [step, row] : rows) {
      const Row& want = reference[y].at(step);
      if (saved.same_layout(resumed)) {
        EXPECT_EQ(row.loss, want.loss) << "step " << step;
        EXPECT_EQ(row.grad_norm, want.grad_norm) << "step " << step;
      } else {
        const double loss = std::stod(row.loss), expected = std::stod(want.loss);
        EXPECT_LE(std::fabs(loss - expected), 1e-5 * std::fabs(expected)) << "step " << step;
      }
    }
    if (saved.same_layout(resumed)) {
      expect_same_tensors(resume_dir(x, y) + "/checkpoints/step_00000006",
                          reference_dir(y) + "/checkpoints/step_00000006");
    }
  }
}

// Llama (grouped-query attention, untied head) saved at tp=2 x pp=2 resumes at dp=4 and on one rank with the
// losses of those layouts' uninterrupted runs, and bit for bit in its own layout.
TEST(CheckpointCli, LlamaSavedAtTp2Pp2ResumesAtDp4AndTp1) {
  TempDir dir;
  const std::string job =
      write_job(dir,
                "model { arch: LLAMA vocab_size: 64 n_layer: 2 n_head: 4 n_kv_head: 2 n_embd: 16 ffn_hidden: 40 "
                "max_seq_len: 16 }\n"
                "train { steps: 6 global_batch: 8 seq_len: 16 threads: 1 }\n"
                "optimizer { lr: 1e-2 warmup_steps: 2 }\n"
                "data { mock: true }\n"
                "checkpoint { every_steps: 3 keep_last: 0 }\n"
                "logging { log_every: 100 }\n");
  const RunLayout saved{2, 2, 1, true};
  const RunLayout resumed[] = {{2, 2, 1, false}, {1, 1, 4, false}, {1, 1, 1, false}};
  std::vector<std::string> commands{train_command(job, saved, dir.file("saved"))};
  for (size_t y = 0; y < std::size(resumed); ++y) {
    commands.push_back(train_command(job, resumed[y], dir.file(str_cat("ref", y))));
  }
  std::vector<testing::CommandResult> results = run_all(commands);
  for (const testing::CommandResult& r : results) ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string checkpoint = dir.file("saved") + "/checkpoints/step_00000003";
  const std::string inspected = run_command(tessera("inspect " + checkpoint)).output;
  EXPECT_TRUE(contains(inspected, "model: LLAMA, vocab 64, 2 layers, 4 heads (2 kv heads), n_embd 16, ffn_hidden 40"))
      << inspected;
  EXPECT_TRUE(contains(inspected, "untied output head")) << inspected;
  commands.clear();
  for (size_t y = 0; y < std::size(resumed); ++y) {
    commands.push_back(train_command(job, resumed[y], dir.file(str_cat("resume", y)),
                                     "--resume " + checkpoint + " --set checkpoint.every_steps=0"));
  }
  results = run_all(commands);
  for (size_t y = 0; y < std::size(resumed); ++y) {
    SCOPED_TRACE("resumed in " + resumed[y].name());
    ASSERT_EQ(results[y].exit_code, 0) << results[y].output;
    const std::map<int, Row> want = read_metrics(dir.file(str_cat("ref", y)));
    const std::map<int, Row> rows = read_metrics(dir.file(str_cat("resume", y)));
    ASSERT_EQ(rows.size(), 3u) << "steps 4 to 6";
    for (const auto& [step, row] : rows) {
      if (resumed[y].same_layout(saved)) {
        EXPECT_EQ(row.loss, want.at(step).loss) << "step " << step;
        EXPECT_EQ(row.grad_norm, want.at(step).grad_norm) << "step " << step;
      } else {
        const double loss = std::stod(row.loss), expected = std::stod(want.at(step).loss);
        EXPECT_LE(std::fabs(loss - expected), 1e-5 * std::fabs(expected)) << "step " << step;
      }
    }
  }
  // The saved run's own next steps are the resumed same-layout run's.
  const std::map<int, Row> original = read_metrics(dir.file("saved"));
  const std::map<int, Row> continued = read_metrics(dir.file("resume0"));
  for (int step = 4; step <= 6; ++step) EXPECT_EQ(continued.at(step).loss, original.at(step).loss) << step;
}

// Interleaved 1F1B (parallel.virtual_stages) on a 6-block GPT-2, deeper than the fixtures: pp=2 with 3 chunks per
// rank, pp=4 with 2, and pp=2 x 3 with dp=2 and ZeRO-2 (each rank's three one-block chunks share a two-slot
// gradient ring across their interleaved backwards) train the one-rank run's losses; the pp=2 x 3 checkpoint (per
// parameter, as every checkpoint) resumes on one rank, at pp=4 without virtual stages and at pp=2 x 3 with dp=2
// and ZeRO-2 with those runs' losses, and bit for bit in its own layout.
TEST(CheckpointCli, VirtualStagesTrainAndResumeInOtherLayouts) {
  TempDir dir;
  const std::string job = write_job(dir,
                                    "model { vocab_size: 64 n_layer: 6 n_head: 4 n_embd: 16 max_seq_len: 16 }\n"
                                    "train { steps: 6 global_batch: 8 seq_len: 16 threads: 1 }\n"
                                    "parallel { micro_batches: 4 }\n"
                                    "optimizer { lr: 1e-2 warmup_steps: 2 }\n"
                                    "data { mock: true }\n"
                                    "checkpoint { every_steps: 3 keep_last: 0 }\n"
                                    "logging { log_every: 100 }\n");
  const RunLayout one{1, 1, 1, false}, pp2{1, 2, 1, true}, pp4{1, 4, 1, false}, pp2dp2{1, 2, 2, false, 2};
  std::vector<testing::CommandResult> results =
      run_all({train_command(job, one, dir.file("one")), train_command(job, pp4, dir.file("pp4")),
               train_command(job, pp2, dir.file("pp2v3"), "--set parallel.virtual_stages=3"),
               train_command(job, pp4, dir.file("pp4v2"), "--set parallel.virtual_stages=2"),
               train_command(job, pp2dp2, dir.file("pp2v3dp2z2"), "--set parallel.virtual_stages=3")});
  for (const testing::CommandResult& r : results) ASSERT_EQ(r.exit_code, 0) << r.output;
  auto expect_close = [](const std::map<int, Row>& rows, const std::map<int, Row>& want) {
    for (const auto& [step, row] : rows) {
      const double loss = std::stod(row.loss), expected = std::stod(want.at(step).loss);
      EXPECT_LE(std::fabs(loss - expected), 1e-5 * std::fabs(expected)) << "step " << step;
    }
  };
  const std::map<int, Row> reference = read_metrics(dir.file("one"));
  ASSERT_EQ(reference.size(), 6u);
  for (const std::string run : {"pp2v3", "pp4v2", "pp2v3dp2z2"}) {
    SCOPED_TRACE(run);
    const std::map<int, Row> rows = read_metrics(dir.file(run));
    ASSERT_EQ(rows.size(), 6u);
    expect_close(rows, reference);
  }

  const std::string checkpoint = dir.file("pp2v3") + "/checkpoints/step_00000003";
  const std::string resume = "--resume " + checkpoint + " --set checkpoint.every_steps=0";
  results = run_all(
      {train_command(job, one, dir.file("resume_one"), resume), train_command(job, pp4, dir.file("resume_pp4"), resume),
       train_command(job, pp2, dir.file("resume_pp2v3"), resume + " --set parallel.virtual_stages=3"),
       train_command(job, pp2dp2, dir.file("resume_pp2v3dp2z2"), resume + " --set parallel.virtual_stages=3")});
  for (const testing::CommandResult& r : results) {
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(contains(r.output, "resumed from " + checkpoint + ": step 3")) << r.output;
  }
  const std::map<int, Row> resumed_one = read_metrics(dir.file("resume_one"));
  const std::map<int, Row> resumed_pp4 = read_metrics(dir.file("resume_pp4"));
  ASSERT_EQ(resumed_one.size(), 3u) << "steps 4 to 6";
  const std::map<int, Row> resumed_zero2 = read_metrics(dir.file("resume_pp2v3dp2z2"));
  ASSERT_EQ(resumed_pp4.size(), 3u) << "steps 4 to 6";
  ASSERT_EQ(resumed_zero2.size(), 3u) << "steps 4 to 6";
  expect_close(resumed_one, reference);
  expect_close(resumed_pp4, read_metrics(dir.file("pp4")));
  expect_close(resumed_zero2, reference);
  const std::map<int, Row> original = read_metrics(dir.file("pp2v3"));
  const std::map<int, Row> continued = read_metrics(dir.file("resume_pp2v3"));
  ASSERT_EQ(continued.size(), 3u) << "steps 4 to 6";
  for (int step = 4; step <= 6; ++step) {
    EXPECT_EQ(continued.at(step).loss, original.at(step).loss) << step;
    EXPECT_EQ(continued.at(step).grad_norm, original.at(step).grad_norm) << step;
  }
}

// Llama with its output head tied to the embedding (no fixture has one): the tie crosses the pipeline (the first
// and last stage each hold a copy and sum their gradients), and every layout trains the one-rank run's losses.
TEST(CheckpointCli, TiedLlamaTrainsTheSameLossesInEveryLayout) {
  TempDir dir;
  const std::string job =
      write_job(dir,
                "model { arch: LLAMA tie_embeddings: true vocab_size: 64 n_layer: 2 n_head: 4 n_kv_head: 2 n_embd: 16 "
                "ffn_hidden: 40 max_seq_len: 16 }\n"
                "train { steps: 4 global_batch: 8 seq_len: 16 threads: 1 }\n"
                "optimizer { lr: 1e-2 warmup_steps: 2 }\n"
                "data { mock: true }\n"
                "checkpoint { every_steps: 0 save_on_exit: false }\n"
                "logging { log_every: 100 }\n");
  const RunLayout layouts[] = {{1, 1, 1}, {1, 2, 1}, {2, 2, 1}, {1, 4, 1}, {2, 1, 2}};
  std::vector<std::string> commands;
  for (size_t x = 0; x < std::size(layouts); ++x) {
    commands.push_back(train_command(job, layouts[x], dir.file(str_cat("run", x))));
  }
  const std::vector<testing::CommandResult> results = run_all(commands);
  for (const testing::CommandResult& r : results) ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::map<int, Row> reference = read_metrics(dir.file("run0"));
  ASSERT_EQ(reference.size(), 4u);
  for (size_t x = 1; x < std::size(layouts); ++x) {
    SCOPED_TRACE(layouts[x].name());
    const std::map<int, Row> rows = read_metrics(dir.file(str_cat("run", x)));
    ASSERT_EQ(rows.size(), 4u);
    for (const auto& [step, row] : rows) {
      const double loss = std::stod(row.loss), expected = std::stod(reference.at(step).loss);
      EXPECT_LE(std::fabs(loss - expected), 1e-5 * std::fabs(expected)) << "step " << step;
      const double norm = std::stod(row.grad_norm), expected_norm = std::stod(reference.at(step).grad_norm);
      EXPECT_LE(std::fabs(norm - expected_norm), 1e-4 * std::fabs(expected_norm)) << "step " << step;
    }
  }
}

// Mixed precision: checkpoints hold the f32 master weights; a resume rebuilds the bf16 compute copy from them,
// so a resume in the same layout continues bit for bit, and one in another layout within bf16 rounding of that
// layout's own uninterrupted run.
TEST(CheckpointCli, MixedPrecisionResumesBitExactInTheSameLayoutAndCloseInAnother) {
  TempDir dir;
  std::string text = kJob;
  text.replace(text.find("max_seq_len: 16 }"), 17, "max_seq_len: 16 dtype: BF16 }");
  const std::string job = write_job(dir, text);
  const RunLayout single{1, 1, 1, false}, tensor_parallel{2, 1, 1, true};
  const std::vector<testing::CommandResult> references =
      run_all({train_command(job, single, dir.file("ref1")), train_command(job, tensor_parallel, dir.file("ref2"))});
  for (const testing::CommandResult& r : references) ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string checkpoint = dir.file("ref1") + "/checkpoints/step_00000003";
  const std::vector<testing::CommandResult> resumed = run_all(
      {train_command(job, single, dir.file("same"), "--resume " + checkpoint + " --set checkpoint.every_steps=0"),
       train_command(
           job, tensor_parallel, dir.file("other"),
           "--resume " + checkpoint + " --set checkpoint.every_steps=0 --set checkpoint.save_on_exit=false")});
  for (const testing::CommandResult& r : resumed) ASSERT_EQ(r.exit_code, 0) << r.output;

  const std::map<int, Row> want_same = read_metrics(dir.file("ref1")), got_same = read_metrics(dir.file("same"));
  ASSERT_EQ(got_same.size(), 3u);
  for (const auto& [step, row] : got_same) {
    EXPECT_EQ(row.loss, want_same.at(step).loss) << "step " << step;
    EXPECT_EQ(row.grad_norm, want_same.at(step).grad_norm) << "step " << step;
  }
  expect_same_tensors(dir.file("same") + "/checkpoints/step_00000006", dir.file("ref1") + "/checkpoints/step_00000006");

  const std::map<int, Row> want_other = read_metrics(dir.file("ref2")), got_other = read_metrics(dir.file("other"));
  ASSERT_EQ(got_other.size(), 3u);
  for (const auto& [step, row] : got_other) {
    const double loss = std::stod(row.loss), expected = std::stod(want_other.at(step).loss);
    EXPECT_LE(std::fabs(loss - expected), 2e-3 * std::fabs(expected)) << "step " << step;
  }
}

// `--resume` without `--config` takes the job config saved in the checkpoint (and continues in the run directory
// that holds it); --set still applies on top, e.g. to change the layout.
TEST(CheckpointCli, ResumeWithoutConfigTakesTheCheckpointsJobConfig) {
  TempDir dir;
  const std::string job = write_job(dir);
  const RunLayout single{1, 1, 1, false};
  const testing::CommandResult reference = run_command(train_command(job, single, dir.file("ref")));
  ASSERT_EQ(reference.exit_code, 0) << reference.output;
  // A copy of the run holding only the step-3 checkpoint: resuming the run directory continues from there.
  const std::string copy = dir.file("copy");
  std::filesystem::create_directories(copy + "/checkpoints");
  std::filesystem::copy(dir.file("ref") + "/checkpoints/step_00000003", copy + "/checkpoints/step_00000003",
                        std::filesystem::copy_options::recursive);
  const testing::CommandResult same = run_command(tessera("train --resume " + copy));
  ASSERT_EQ(same.exit_code, 0) << same.output;
  EXPECT_TRUE(contains(same.output, "job config: the one saved in " + copy + "/checkpoints/step_00000003"))
      << same.output;
  const std::map<int, Row> want = read_metrics(dir.file("ref")), got = read_metrics(copy);
  ASSERT_EQ(got.size(), 3u) << "steps 4 to 6, written into the resumed run's directory";
  for (const auto& [step, row] : got) EXPECT_EQ(row.loss, want.at(step).loss) << "step " << step;

  const testing::CommandResult other = run_command(
      str_cat(kEnvironment, TESSERA_MPIEXEC, " --oversubscribe -np 2 ", kTessera, " train --resume ", dir.file("ref"),
              "/checkpoints/step_00000003 --set parallel.tp=2 --set checkpoint.save_on_exit=false --run-dir ",
              dir.file("tp2")));
  ASSERT_EQ(other.exit_code, 0) << other.output;
  EXPECT_TRUE(contains(other.output, "with the --set overrides")) << other.output;
  EXPECT_EQ(read_metrics(dir.file("tp2")).size(), 3u);

  const testing::CommandResult neither = run_command(tessera("train"));
  EXPECT_EQ(neither.exit_code, 2) << neither.output;
  EXPECT_TRUE(contains(neither.output, "give the job with --config FILE.textproto, or --resume")) << neither.output;
  const testing::CommandResult latest = run_command(tessera("train --resume latest"));
  EXPECT_EQ(latest.exit_code, 2) << latest.output;
  EXPECT_TRUE(contains(latest.output, "--resume latest without --config needs --run-dir")) << latest.output;
}

// One rank failing to write its shard fails the save on every rank, naming that rank and its error, and the
// previous checkpoint stays the latest. (Shard metadata normally goes to rank 0 only; on a failure every rank
// gets every report, so each can say what happened.)
TEST(CheckpointCli, AShardThatCannotBeWrittenFailsTheSaveOnEveryRankAndKeepsTheLatest) {
  TempDir dir;
  const std::string job = write_job(dir);
  const testing::CommandResult r =
      run_command(train_command(job, RunLayout{2, 1, 1, false}, dir.file("run"), "--debug-fail-shard-write 6:1"));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output,
                       "checkpoint step_00000006 could not be saved (the previous checkpoint is still the "
                       "latest):"))
      << r.output;
  EXPECT_TRUE(contains(r.output, "rank 1: cannot write shard_1.h5: failure injected")) << r.output;
  EXPECT_EQ(read_latest(dir.file("run") + "/checkpoints"), std::optional<std::string>("step_00000003"));
  EXPECT_FALSE(std::filesystem::exists(dir.file("run") + "/checkpoints/step_00000006"));
}

TEST(CheckpointCli, SaveKilledAtAnyPointLeavesThePreviousCheckpointLatest) {
  TempDir dir;
  const std::string job = write_job(dir);
  const RunLayout layout{2, 1, 1, false};
  const std::string every2 = "--set checkpoint.every_steps=2 ";
  const std::vector<std::string> points = {"shards", "manifest", "rename"};
  auto run_dir = [&](size_t i) { return dir.file("run_" + points[i]); };
  // The uninterrupted run, and one run killed in the save of step 4 at each point.
  std::vector<std::string> commands = {train_command(job, layout, dir.file("ref"), every2)};
  for (size_t i = 0; i < points.size(); ++i) {
    commands.push_back(train_command(job, layout, run_dir(i), every2 + "--debug-kill-during-save 4:" + points[i]));
  }
  std::vector<testing::CommandResult> results = run_all(commands, 4);
  ASSERT_EQ(results[0].exit_code, 0) << results[0].output;
  commands.clear();
  for (size_t i = 0; i < points.size(); ++i) {
    SCOPED_TRACE("killed after " + points[i]);
    EXPECT_NE(results[i + 1].exit_code, 0) << results[i + 1].output;
    EXPECT_EQ(read_latest(run_dir(i) + "/checkpoints"), std::optional<std::string>("step_00000002"));
    const auto inspect = run_command(tessera("inspect " + run_dir(i)));
    EXPECT_EQ(inspect.exit_code, 0) << inspect.output;
    EXPECT_TRUE(contains(inspect.output, "step_00000002")) << inspect.output;
    commands.push_back(train_command(job, layout, run_dir(i), every2 + "--resume latest"));
  }
  results = run_all(commands);
  const std::map<int, Row> want = read_metrics(dir.file("ref"));
  for (size_t i = 0; i < points.size(); ++i) {
    SCOPED_TRACE("killed after " + points[i]);
    const std::string checkpoints = run_dir(i) + "/checkpoints";
    ASSERT_EQ(results[i].exit_code, 0) << results[i].output;
    EXPECT_TRUE(contains(results[i].output, "resumed from " + checkpoints + "/step_00000002: step 2"))
        << results[i].output;
    EXPECT_EQ(read_latest(checkpoints), std::optional<std::string>("step_00000006"));
    // Nothing of the interrupted save is left, and the run is the uninterrupted one.
    for (const auto& entry : fs::directory_iterator(checkpoints)) {
      EXPECT_FALSE(contains(entry.path().filename().string(), ".tmp-")) << entry.path();
    }
    const std::map<int, Row> rows = read_metrics(run_dir(i));
    ASSERT_EQ(rows.size(), 6u);
    for (const auto& [step, row] : rows) EXPECT_EQ(row.loss, want.at(step).loss) << "step " << step;
  }
}

// The ranks mpirun started (its child processes).
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> children;
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  pid_t child;
  while (in >> child) children.push_back(child);
  return children;
}

TEST(CheckpointCli, SigtermOnOneRankSavesAFinalCheckpointExitsThreeAndResumeAutoContinues) {
  TempDir dir;
  const std::string job = write_job(dir);
  const std::string run = dir.file("run");
  const std::string log = dir.file("log");
  const std::string command =
      train_command(job, {1, 1, 2, false}, run,
                    "--set train.steps=50000 --set checkpoint.every_steps=0 --set logging.log_every=100000");
  const pid_t launcher = ::fork();
  ASSERT_GE(launcher, 0);
  if (launcher == 0) {
    ::execl("/bin/sh", "sh", "-c", ("exec env " + command + " > " + log + " 2>&1").c_str(), nullptr);
    ::_exit(127);
  }
  // Wait for a few steps, then stop rank 1 only.
  bool running = false;
  for (int i = 0; i < 600 && !running; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    running = read_metrics(run).size() >= 5 && children_of(launcher).size() == 2;
  }
  if (!running) {
    ::kill(launcher, SIGKILL);
    ::waitpid(launcher, nullptr, 0);
  }
  ASSERT_TRUE(running) << "the run did not start";
  ::kill(children_of(launcher).at(1), SIGTERM);
  int status = 0;
  bool exited = false;
  for (int i = 0; i < 600 && !exited; ++i) {
    exited = ::waitpid(launcher, &status, WNOHANG) == launcher;
    if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!exited) {
    ::kill(launcher, SIGKILL);
    ::waitpid(launcher, &status, 0);
  }
  ASSERT_TRUE(exited) << "the run did not stop within 30 s of SIGTERM";
  std::ifstream in(log);
  const std::string output((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_TRUE(WIFEXITED(status)) << output;
  EXPECT_EQ(WEXITSTATUS(status), 3) << output;
  const int last = read_metrics(run).rbegin()->first;
  EXPECT_TRUE(contains(output, "stopped by SIGTERM after step " + std::to_string(last) + " (exit code 3)")) << output;
  EXPECT_EQ(read_latest(run + "/checkpoints"), step_dir_name(last));
  EXPECT_EQ(run_command(tessera("inspect " + run)).exit_code, 0);
  // The requeued job: the same command with --resume auto continues from the final checkpoint and finishes.
  const testing::CommandResult requeued = run_command(
      train_command(job, {1, 1, 2, false}, run,
                    str_cat("--set train.steps=", last + 2, " --set checkpoint.every_steps=0 --resume auto")));
  ASSERT_EQ(requeued.exit_code, 0) << requeued.output;
  EXPECT_TRUE(
      contains(requeued.output, str_cat("resumed from ", run, "/checkpoints/", step_dir_name(last), ": step ", last)))
      << requeued.output;
  EXPECT_EQ(read_metrics(run).size(), static_cast<size_t>(last + 2));
}

// A run directory that holds a run (metrics.jsonl, checkpoints) is never started over: without --resume the job
// is refused before anything in it changes, naming both ways on. --resume auto continues it, or starts from step
// 0 where there is no checkpoint (a job requeued before its first save).
TEST(CheckpointCli, ARunDirectoryThatHoldsARunIsRefusedWithoutResume) {
  TempDir dir;
  const std::string job = write_job(dir);
  const RunLayout layout{1, 1, 1, false};
  const std::string run = dir.file("run");
  ASSERT_EQ(run_command(train_command(job, layout, run)).exit_code, 0);
  const std::string metrics = testing::read_text_file(run + "/metrics.jsonl");
  const std::string config = testing::read_text_file(run + "/config.textproto");
  for (const std::string& extra : std::vector<std::string>{"", "--set train.steps=8", "--init-from " + run}) {
    SCOPED_TRACE(extra);
    const testing::CommandResult r = run_command(train_command(job, layout, run, extra));
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_TRUE(contains(r.output, "run directory '" + run + "' already holds a run (metrics.jsonl and checkpoints/)"))
        << r.output;
    EXPECT_TRUE(contains(r.output, "--resume latest (or --resume auto)")) << r.output;
    EXPECT_TRUE(contains(r.output, "another --run-dir")) << r.output;
    EXPECT_EQ(testing::read_text_file(run + "/metrics.jsonl"), metrics);
    EXPECT_EQ(testing::read_text_file(run + "/config.textproto"), config);
  }
  testing::CommandResult r = run_command(train_command(job, layout, run, "--resume auto --set train.steps=8"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "resumed from " + run + "/checkpoints/step_00000006: step 6")) << r.output;
  EXPECT_EQ(read_metrics(run).size(), 8u);

  // Only metrics.jsonl (no checkpoint was saved): refused without --resume; --resume auto starts at step 0.
  const std::string unsaved = dir.file("unsaved");
  const std::string no_saves = "--set checkpoint.every_steps=0 --set checkpoint.save_on_exit=false";
  ASSERT_EQ(run_command(train_command(job, layout, unsaved, no_saves)).exit_code, 0);
  r = run_command(train_command(job, layout, unsaved, no_saves));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "already holds a run (metrics.jsonl)")) << r.output;
  r = run_command(train_command(job, layout, unsaved, no_saves + " --resume auto"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "starting from step 0")) << r.output;
  EXPECT_EQ(read_metrics(unsaved).size(), 6u);
  // A new directory: --resume auto starts a run.
  r = run_command(train_command(job, layout, dir.file("new"), "--resume auto --set train.steps=2"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "starting from step 0")) << r.output;
}

void flip_byte(const std::string& path) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  const auto middle = static_cast<std::streamoff>(fs::file_size(path) / 2);
  file.seekg(middle);
  char c = 0;
  file.read(&c, 1);
  file.seekp(middle);
  file.put(static_cast<char>(c ^ 0x10));
}

TEST(CheckpointCli, DamagedCheckpointsAreNamedAndLatestFallsBack) {
  TempDir dir;
  const std::string job = write_job(dir);
  const RunLayout layout{2, 1, 1, false};
  const std::string run = dir.file("run");
  const std::string checkpoints = run + "/checkpoints";
  ASSERT_EQ(run_command(train_command(job, layout, run)).exit_code, 0);

  flip_byte(checkpoints + "/step_00000006/shard_1.h5");
  // inspect RUN_DIR chooses as --resume latest does: step 6 is named as damaged, step 3 is what loads.
  auto r = run_command(tessera("inspect " + run));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "step_00000006/shard_1.h5 is corrupted: its XXH64 checksum differs")) << r.output;
  EXPECT_TRUE(contains(r.output, "checkpoint " + checkpoints + "/step_00000003 (the newest complete checkpoint"))
      << r.output;
  const RunLayout one_rank{1, 1, 1, false};
  r = run_command(train_command(job, one_rank, dir.file("other"), "--resume " + checkpoints + "/step_00000006"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "shard_1.h5 is corrupted")) << r.output;
  EXPECT_FALSE(contains(r.output, "HDF5-DIAG")) << r.output;

  // --resume latest skips the damaged checkpoint, says so, and saves step 6 again in its place.
  r = run_command(train_command(job, layout, run, "--resume latest"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "is not usable")) << r.output;
  EXPECT_TRUE(contains(r.output, "falling back to the next newest checkpoint")) << r.output;
  EXPECT_TRUE(contains(r.output, "resumed from " + checkpoints + "/step_00000003 (the newest complete checkpoint)"))
      << r.output;
  EXPECT_EQ(run_command(tessera("inspect " + run)).exit_code, 0);

  fs::resize_file(checkpoints + "/step_00000003/shard_0.h5", 1000);
  r = run_command(tessera("inspect " + checkpoints + "/step_00000003"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "step_00000003/shard_0.h5 is truncated or was changed: 1000 bytes")) << r.output;

  fs::remove(checkpoints + "/step_00000006/manifest.pb");
  r = run_command(tessera("inspect " + checkpoints + "/step_00000006"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "has no manifest.pb: the save was interrupted")) << r.output;
  // Nothing usable is left: every damaged checkpoint is listed.
  r = run_command(train_command(job, one_rank, run, "--resume latest"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "no usable checkpoint in " + checkpoints)) << r.output;
  EXPECT_TRUE(contains(r.output, "step_00000006' has no manifest.pb")) << r.output;
  EXPECT_TRUE(contains(r.output, "step_00000003/shard_0.h5 is truncated")) << r.output;
}

// A real SentencePiece model of `vocab` pieces trained on a few lines (data.tokenizer is loaded when a job
// starts).
void train_small_tokenizer(const TempDir& dir, const std::string& model, int vocab) {
  const std::string text = dir.file(model + ".txt");
  std::string lines;
  for (int i = 0; i < 50; ++i) lines += str_cat("the quick brown fox ", i, " jumps over the lazy dog\n");
  testing::write_text_file(text, lines);
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      str_cat("--input=", text, " --model_prefix=", dir.file(model), " --vocab_size=", vocab,
              " --model_type=bpe --character_coverage=1.0 --minloglevel=2"));
  ASSERT_TRUE(status.ok()) << status.ToString();
}

TEST(CheckpointCli, AnotherModelShapeBatchOrTokenizerIsRefused) {
  TempDir dir;
  const std::string job = write_job(dir);
  train_small_tokenizer(dir, "a", 40);
  train_small_tokenizer(dir, "b", 41);
  const RunLayout layout{1, 1, 1, false};
  const std::string run = dir.file("run");
  const std::string checkpoint = run + "/checkpoints/step_00000003";
  ASSERT_EQ(run_command(train_command(job, layout, run, "--set data.tokenizer=" + dir.file("a.model"))).exit_code, 0);
  auto r = run_command(train_command(job, layout, dir.file("x"), "--resume " + checkpoint + " --set model.n_embd=32"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "model.n_embd: the checkpoint has 16, this run 32")) << r.output;
  // Another architecture of the same sizes: GPT-2's tensors are not a Llama's.
  r = run_command(train_command(job, layout, dir.file("x"), "--resume " + checkpoint + " --set model.arch=LLAMA"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "model.arch: the checkpoint has GPT2, this run LLAMA")) << r.output;
  r = run_command(train_command(job, layout, dir.file("x"), "--resume " + checkpoint + " --set train.global_batch=16"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "train.global_batch: the checkpoint has 8, this run 16")) << r.output;
  r = run_command(train_command(job, layout, dir.file("x"),
                                "--resume " + checkpoint + " --set data.tokenizer=" + dir.file("b.model")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "data.tokenizer: the checkpoint was trained with '" + dir.file("a.model")))
      << r.output;
  // A rejected resume into a run directory changes nothing in it: not its config.textproto either.
  const std::string saved_config = run + "/config.textproto";
  const std::string before = testing::read_text_file(saved_config);
  r = run_command(train_command(job, layout, run,
                                "--resume latest --set model.n_embd=32 --set data.tokenizer=" + dir.file("a.model")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(testing::read_text_file(saved_config), before);
  // No checkpoint yet: --resume latest starts from step 0.
  r = run_command(train_command(job, layout, dir.file("fresh"), "--resume latest --set train.steps=2"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "starting from step 0")) << r.output;
}

TEST(CheckpointCli, ImportedFixtureWeightsLoadWholeAndTrainInAnotherLayout) {
  for (const std::string fixture_name : {"gpt2-tiny", "llama-tiny"}) {
    SCOPED_TRACE(fixture_name);
    TempDir dir;
    const std::string fixture_path = std::string(TESSERA_TEST_DATA) + "/" + fixture_name + ".h5";
    const std::string run = dir.file("run");
    auto r = run_command(tessera("import --input " + fixture_path + " --out " + run));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    r = run_command(tessera("inspect " + run));
    ASSERT_EQ(r.exit_code, 0) << r.output;

    const Fixture fixture = load_fixture(fixture_path);
    H5Reader model(run + "/checkpoints/step_00000000/model.h5");
    for (const std::string& name : fixture.param_names) {
      EXPECT_EQ(model.read_f32("model/" + name), fixture.init.at(name)) << name;
      for (float m : model.read_f32("optim/exp_avg/" + name)) ASSERT_EQ(m, 0.0f);
    }
    // The fixture's job, trained for two steps from the imported weights with tp=2.
    const std::string job = dir.file("fixture.textproto");
    testing::write_text_file(job, job_config_to_text(fixture_job_config(fixture)));
    r = run_command(train_command(job, {2, 1, 1, false}, run, "--resume latest --set train.steps=2"));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_TRUE(contains(r.output, "resumed from " + run + "/checkpoints/step_00000000: step 0")) << r.output;
    EXPECT_EQ(read_latest(run + "/checkpoints"), std::optional<std::string>("step_00000002"));
  }
  TempDir dir;
  const std::string fixture_path = std::string(TESSERA_TEST_DATA) + "/gpt2-tiny.h5";
  const auto r =
      run_command(tessera("import --input " + fixture_path + " --out " + dir.file("bad") + " --set model.n_embd=32"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "init/wte has shape [512, 64], the model of the config expects [512, 32]"))
      << r.output;
}

}  // namespace
}  // namespace tessera

// parallel.layout=auto through `tessera train` under mpirun (launcher/run/auto_layout.h): on 2 and 4 ranks the
// layout train prints as chosen, and the one its run directory records, is the best one `tessera plan` prints
// for the same job and world size; explicitly set layout fields are kept; a run resumed with layout=auto from
// another layout's checkpoint continues its losses; a value other than "auto" and a constraint no layout meets
// are ConfigErrors that say what to do.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>

#include "core/check.h"
#include "launcher/common/json_io.h"
#include "tests/cli_command.h"
#include "tests/run_command.h"
#include "tests/temp_dir.h"

namespace tessera {
namespace {

using testing::run_command;
using testing::TempDir;

const std::string& kEnvironment = testing::kCliEnvironment;

std::string tessera(const std::string& args, int ranks) { return testing::tessera_cli(args, ranks); }

// A tiny GPT-2 (4 heads, 4 layers, 16 sequences a step): many legal layouts on 2 and 4 ranks.
std::string write_job(const TempDir& dir) {
  const std::string path = dir.path().string() + "/job.textproto";
  std::ofstream(path) << "name: \"auto\"\n"
                         "model { vocab_size: 256 n_layer: 4 n_head: 4 n_embd: 64 max_seq_len: 32 }\n"
                         "train { steps: 2 global_batch: 16 seq_len: 32 threads: 1 }\n"
                         "data { mock: true }\n"
                         "logging { log_every: 1 }\n";
  return path;
}

// "tp=1 pp=1 dp=2 micro_batches=1 zero_stage=1 recompute=NONE" (then " sequence_parallel", " virtual_stages=2"
// when chosen) from train's line, or "" when it is missing.
std::string chosen_by_train(const std::string& output) {
  std::smatch m;
  const std::regex line(
      "parallel\\.layout=auto chose (tp=\\d+ pp=\\d+ dp=\\d+ micro_batches=\\d+ zero_stage=\\d+ "
      "recompute=[A-Z]+(?: every \\d+)?(?: sequence_parallel)?(?: virtual_stages=\\d+)?)");
  return std::regex_search(output, m, line) ? m[1].str() : "";
}

// The same words for the best layout of `tessera plan --json`.
std::string best_of_plan(const std::string& json_text) {
  const Json plan = parse_json(json_text, "tessera plan --json");
  const Json& best = plan.at("layouts").at(0);
  return str_cat(
      "tp=", best.at("tp").get<int>(), " pp=", best.at("pp").get<int>(), " dp=", best.at("dp").get<int>(),
      " micro_batches=", best.at("micro_batches").get<int>(), " zero_stage=", best.at("zero_stage").get<int>(),
      " recompute=", best.at("recompute").get<std::string>(),
      best.at("sequence_parallel").get<bool>() ? " sequence_parallel" : "",
      best.at("virtual_stages").get<int>() > 1 ? str_cat(" virtual_stages=", best.at("virtual_stages").get<int>())
                                               : std::string());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void expect_train_picks_plans_best(int ranks, const std::string& extra) {
  TempDir dir;
  const std::string job = write_job(dir);
  const std::string run_dir = dir.path().string() + "/run";
  const auto train = run_command(
      tessera(str_cat("train --config ", job, " --run-dir ", run_dir, " --set parallel.layout=auto", extra), ranks));
  ASSERT_EQ(train.exit_code, 0) << train.output;
  const std::string chosen = chosen_by_train(train.output);
  ASSERT_FALSE(chosen.empty()) << train.output;
  // The planner as `tessera plan` runs it, with the fixed CPU rate that layout=auto plans with.
  const auto plan =
      run_command(kEnvironment + TESSERA_BINARY + " plan --config " + job + " --set parallel.layout=auto" + extra +
                  " --gpus " + std::to_string(ranks) + " --gpu cpu --cpu-gflops 100 --json --top 1");
  ASSERT_EQ(plan.exit_code, 0) << plan.output;
  EXPECT_EQ(chosen, best_of_plan(plan.output)) << train.output;
  // The run directory records the layout that ran, not "auto".
  const std::string recorded = read_file(run_dir + "/config.textproto");
  EXPECT_EQ(recorded.find("layout:"), std::string::npos) << recorded;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(chosen, m, std::regex("tp=(\\d+) pp=(\\d+) dp=(\\d+)")));
  EXPECT_NE(recorded.find("tp: " + m[1].str()), std::string::npos) << recorded;
  EXPECT_NE(recorded.find("pp: " + m[2].str()), std::string::npos) << recorded;
  EXPECT_NE(recorded.find("dp: " + m[3].str()), std::string::npos) << recorded;
  EXPECT_NE(train.output.find("done: 2 steps"), std::string::npos) << train.output;
}

TEST(AutoLayoutCli, TwoRanksTrainThePlansBest) { expect_train_picks_plans_best(2, ""); }
TEST(AutoLayoutCli, FourRanksTrainThePlansBest) { expect_train_picks_plans_best(4, ""); }

// Set fields are constraints: with parallel.tp=2 and pp=2 on 4 ranks the planner only picks the rest.
TEST(AutoLayoutCli, SetFieldsAreKept) {
  expect_train_picks_plans_best(4, " --set parallel.tp=2 --set parallel.pp=2");
  TempDir dir;
  const auto train = run_command(tessera(str_cat("train --config ", write_job(dir), " --run-dir ", dir.path().string(),
                                                 "/run --set parallel.layout=auto --set parallel.tp=2"),
                                         2));
  ASSERT_EQ(train.exit_code, 0) << train.output;
  EXPECT_NE(chosen_by_train(train.output).find("tp=2 pp=1 dp=1"), std::string::npos) << train.output;
}

// step -> loss of a run directory's metrics.jsonl.
std::map<int, double> losses(const std::string& run_dir) {
  std::map<int, double> out;
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const Json row = parse_json(line, "metrics.jsonl");
    out[row.at("step").get<int>()] = row.at("loss").get<double>();
  }
  return out;
}

// A checkpoint saved at pp=2 resumes under layout=auto on 2 ranks (the planner picks the layout; the
// checkpoint reshards on load) and trains the saved run's next losses.
TEST(AutoLayoutCli, ResumesAnotherLayoutsCheckpoint) {
  TempDir dir;
  const std::string job = write_job(dir), saved = dir.path().string() + "/saved";
  const std::string steps = " --set train.steps=4 --set checkpoint.every_steps=2 --set checkpoint.keep_last=0";
  const auto train =
      run_command(tessera(str_cat("train --config ", job, " --run-dir ", saved, " --set parallel.pp=2", steps), 2));
  ASSERT_EQ(train.exit_code, 0) << train.output;
  const std::string checkpoint = saved + "/checkpoints/step_00000002";
  const std::string resumed_dir = dir.path().string() + "/resumed";
  const auto resumed = run_command(tessera(str_cat("train --config ", job, " --run-dir ", resumed_dir, steps,
                                                   " --set parallel.layout=auto --resume ", checkpoint),
                                           2));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_FALSE(chosen_by_train(resumed.output).empty()) << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from " + checkpoint + ": step 2"), std::string::npos) << resumed.output;
  const std::map<int, double> want = losses(saved), got = losses(resumed_dir);
  ASSERT_EQ(got.size(), 2u) << "steps 3 and 4";
  for (const auto& [step, loss] : got) {
    ASSERT_TRUE(want.count(step)) << step;
    EXPECT_LE(std::fabs(loss - want.at(step)), 1e-5 * std::fabs(want.at(step))) << "step " << step;
  }
}

TEST(AutoLayoutCli, UserErrors) {
  TempDir dir;
  const std::string job = write_job(dir);
  const auto other = run_command(tessera("train --config " + job + " --set parallel.layout=best", 1));
  EXPECT_NE(other.exit_code, 0);
  EXPECT_NE(other.output.find("parallel.layout ('best') must be \"auto\""), std::string::npos) << other.output;
  // dp=3 on 2 ranks: no layout keeps it.
  const auto impossible =
      run_command(tessera("train --config " + job + " --set parallel.layout=auto --set parallel.dp=3", 2));
  EXPECT_NE(impossible.exit_code, 0);
  EXPECT_NE(impossible.output.find("parallel.layout=auto: no layout of this job fits 2 x cpu"), std::string::npos)
      << impossible.output;
  EXPECT_NE(impossible.output.find("kept as set: parallel.dp=3"), std::string::npos) << impossible.output;
}

}  // namespace
}  // namespace tessera

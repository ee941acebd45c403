// The `tessera` command line as a user meets it: generated help for every subcommand (naming its flags, hiding the
// --debug test hooks), --version, the exit code 2 of every usage error with CLI11's message and a pointer to
// --help, and the rules by which --set and --unset on the command line win over the config file.
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "launcher/data/indexed_dataset.h"
#include "tests/run_command.h"
#include "tests/temp_dir.h"

namespace {

using tessera::testing::run_command;
using tessera::testing::TempDir;

const std::string kTessera = TESSERA_BINARY;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

size_t count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size())) ++n;
  return n;
}

// Every subcommand and the flags its scripts and tests use: these names are the interface.
struct CommandFlags {
  const char* command;
  std::vector<const char*> flags;
  const char* value_flag;  // one flag that takes a value, to leave without one
};

const std::vector<CommandFlags> kCommands = {
    {"prepare",
     {"--input", "--invalid-utf8", "--doc-separator", "--tokenizer-out", "--vocab-size", "--tokenizer", "--out",
      "--valid-fraction", "--seed", "--threads", "--mc-task-out", "--mc-task-size", "--format", "--template",
      "--input-format", "--text-key"},
     "--out"},
    {"train", {"--config", "--set", "--unset", "--run-dir", "--resume", "--init-from", "--trace-steps"}, "--config"},
    {"eval",
     {"--checkpoint", "--data", "--max-tokens", "--task", "--per-example", "--config", "--json", "--set", "--unset"},
     "--checkpoint"},
    {"inspect", {"PATH", "--slices"}, nullptr},
    {"import", {"--input", "--hf", "--out", "--config", "--set", "--unset"}, "--out"},
    {"export", {"--checkpoint", "--format", "--out", "--dtype", "--max-shard-size"}, "--format"},
    {"verify",
     {"--fixture", "--set", "--unset", "--loss-rtol", "--grad-norm-rtol", "--weight-atol", "--update-rtol"},
     "--fixture"},
    {"generate",
     {"--checkpoint", "--prompt", "--prompt-ids", "--prompts-file", "--max-new-tokens", "--temperature", "--top-k",
      "--top-p", "--seed", "--json", "--no-kv-cache", "--set", "--unset"},
     "--checkpoint"},
    {"bench", {"--shape", "--steps", "--warmup", "--no-dp-overlap", "--set", "--unset"}, "--steps"},
    {"plot", {"RUN_DIR", "--out"}, "--out"},
    {"plan",
     {"--config", "--gpus", "--gpu", "--nodes-of", "--top", "--calibrate", "--json", "--set", "--unset"},
     "--gpus"},
};

TEST(CommandLineHelp, EverySubcommandHasGeneratedHelpNamingItsFlags) {
  for (const CommandFlags& c : kCommands) {
    SCOPED_TRACE(c.command);
    const auto help = run_command(kTessera + " " + c.command + " --help");
    EXPECT_EQ(help.exit_code, 0) << help.output;
    EXPECT_TRUE(contains(help.output, std::string("Usage: tessera ") + c.command)) << help.output;
    for (const char* flag : c.flags) EXPECT_TRUE(contains(help.output, std::string("  ") + flag)) << flag;
    // Test hooks are accepted but not shown.
    EXPECT_FALSE(contains(help.output, "--debug")) << help.output;
    // -h and `tessera help COMMAND` print the same.
    EXPECT_EQ(run_command(kTessera + " " + c.command + " -h").output, help.output);
    const auto topic = run_command(kTessera + " help " + c.command);
    EXPECT_EQ(topic.exit_code, 0);
    EXPECT_EQ(topic.output, help.output);
  }
}

TEST(CommandLineHelp, TopLevelHelpListsTheCommandsAndTheExitCodes) {
  const auto r = run_command(kTessera + " --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const CommandFlags& c : kCommands) EXPECT_TRUE(contains(r.output, std::string("\n  ") + c.command + " "));
  for (const char* line :
       {"exit codes:", "  0  finished", "  1  a runtime error", "  2  a usage or config error",
        "  3  train stopped by SIGTERM/SIGINT/SIGUSR1 after saving a checkpoint: requeue it with --resume auto",
        "tessera <command> --help"}) {
    EXPECT_TRUE(contains(r.output, line)) << line << "\n" << r.output;
  }
  EXPECT_EQ(run_command(kTessera + " help").output, r.output);
  EXPECT_EQ(run_command(kTessera + " -h").output, r.output);
  // The exit-code table belongs to the top level only.
  EXPECT_FALSE(contains(run_command(kTessera + " train --help").output, "exit codes:"));
}

TEST(CommandLineHelp, VersionNamesTheBuild) {
  const auto r = run_command(kTessera + " --version");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.rfind(std::string("tessera ") + TESSERA_EXPECTED_VERSION + " (commit ", 0), 0u) << r.output;
  EXPECT_TRUE(contains(r.output, "\ncompiler: ")) << r.output;
  EXPECT_TRUE(contains(r.output, "protobuf ")) << r.output;
#ifdef TESSERA_HAS_CUDA
  EXPECT_TRUE(contains(r.output, "\nCUDA: toolkit ")) << r.output;
  EXPECT_TRUE(contains(r.output, std::string("GPU architectures ") + TESSERA_EXPECTED_CUDA_ARCHITECTURES)) << r.output;
#else
  EXPECT_TRUE(contains(r.output, "\nCUDA: not built")) << r.output;
#endif
#ifdef TESSERA_HAS_NCCL
  EXPECT_TRUE(contains(r.output, "\nNCCL: 2.")) << r.output;
#endif
  const auto command = run_command(kTessera + " version");
  EXPECT_EQ(command.exit_code, 0);
  EXPECT_EQ(command.output, r.output);
}

// ---- usage errors: exit 2, CLI11's message, a pointer to --help -------------------------------------------------

TEST(CommandLineErrors, UnknownFlagOfEveryCommand) {
  for (const CommandFlags& c : kCommands) {
    SCOPED_TRACE(c.command);
    const auto r = run_command(kTessera + " " + c.command + " --bogus-flag 1");
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_TRUE(contains(r.output, "--bogus-flag")) << r.output;
    EXPECT_TRUE(contains(r.output, std::string("`tessera ") + c.command + " --help`")) << r.output;
  }
}

TEST(CommandLineErrors, MissingValueOfEveryCommand) {
  for (const CommandFlags& c : kCommands) {
    if (c.value_flag == nullptr) continue;
    SCOPED_TRACE(c.command);
    const auto r = run_command(kTessera + " " + c.command + " " + c.value_flag);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_TRUE(contains(r.output, c.value_flag)) << r.output;
    EXPECT_TRUE(contains(r.output, std::string("`tessera ") + c.command + " --help`")) << r.output;
  }
  // inspect's PATH.
  const auto r = run_command(kTessera + " inspect");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "PATH is required")) << r.output;
}

TEST(CommandLineErrors, UnknownCommandAndStrayArguments) {
  auto r = run_command(kTessera + " trian --config x");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "unknown command 'trian'")) << r.output;
  EXPECT_TRUE(contains(r.output, "train")) << r.output;
  r = run_command(kTessera + " help trian");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "unknown command 'trian'")) << r.output;
  r = run_command(kTessera + " --bogus");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "`tessera --help`")) << r.output;
  // No command at all: the help, on stderr, and exit 2.
  r = run_command(kTessera);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.output, "Usage: tessera")) << r.output;
  EXPECT_TRUE(contains(run_command(kTessera + " 2>&1 >/dev/null | cat").output, "Usage: tessera"));
  // --set takes one value each time: a second word is not another assignment.
  r = run_command(kTessera + " train --config x --set parallel.tp=1 parallel.pp=1");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "parallel.pp=1")) << r.output;
  // A number that is not one.
  r = run_command(kTessera + " bench --steps many");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--steps")) << r.output;
}

// ---- --set and --unset against the config file -----------------------------------------------------------------

class CommandLineOverrides : public ::testing::Test {
 protected:
  // A tiny job of two steps whose data block is `data`, its run directory inside the test's directory.
  std::string job(const std::string& data) {
    const std::string path = dir_.file("job.textproto");
    std::ofstream(path) << "model { vocab_size: 64 n_layer: 1 n_head: 2 n_embd: 16 max_seq_len: 16 }\n"
                           "train { steps: 2 global_batch: 2 seq_len: 16 threads: 1 }\n"
                           "data { "
                        << data << " }\nlogging { run_dir: \"" << run_dir() << "\" }\n";
    return path;
  }
  std::string run_dir() const { return dir_.file("run"); }
  // The config the run recorded (every field explicit).
  std::string recorded() const { return read(run_dir() + "/config.textproto"); }
  // A dataset of 2000 tokens below 64.
  std::string dataset(const std::string& name) {
    const std::string prefix = dir_.file(name);
    tessera::IndexedDatasetWriter writer(prefix, tessera::IndexedDType::kUInt16);
    std::vector<int32_t> tokens(2000);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7 + name.size()) % 64);
    writer.add_document(tokens.data(), tokens.size());
    writer.finalize();
    return prefix;
  }

  TempDir dir_;
};

TEST_F(CommandLineOverrides, MockOnTheCommandLineTrainsDespiteTheFilesDataset) {
  const std::string missing = dir_.file("no_such_dataset");
  const std::string config = job("train_prefix: \"" + missing + "\"");
  const auto r = run_command(kTessera + " train --config " + config + " --set data.mock=true");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "note: --set data.mock=true overrides the config's data.train_prefix '" + missing +
                                     "', which is ignored: training on generated tokens"))
      << r.output;
  EXPECT_EQ(count(r.output, "note: "), 1u) << r.output;
  EXPECT_TRUE(contains(r.output, "done: 2 steps")) << r.output;
  EXPECT_TRUE(contains(recorded(), "mock: true")) << recorded();
  EXPECT_FALSE(contains(recorded(), "train_prefix")) << recorded();
}

TEST_F(CommandLineOverrides, MockOnTheCommandLineReplacesTheFilesBlend) {
  const std::string config = job("train_blend { prefix: \"a\" weight: 1 } train_blend { prefix: \"b\" weight: 2 }");
  const auto r = run_command(kTessera + " train --config " + config + " --set data.mock=true");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "note: --set data.mock=true overrides the config's data.train_blend (2 dataset(s))"))
      << r.output;
  EXPECT_FALSE(contains(recorded(), "train_blend")) << recorded();
}

TEST_F(CommandLineOverrides, BothInTheFileStaysAConfigError) {
  const auto r = run_command(kTessera + " train --config " + job("mock: true train_prefix: \"x\""));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "data.mock=true and data.train_prefix are both set")) << r.output;
  // And both on the command line.
  const auto both = run_command(kTessera + " train --config " + job("mock: true") +
                                " --set data.mock=true --set data.train_prefix=x");
  EXPECT_EQ(both.exit_code, 2) << both.output;
  EXPECT_TRUE(contains(both.output, "both set")) << both.output;
}

TEST_F(CommandLineOverrides, UnsetClearsAField) {
  // The file's conflict goes away with the field.
  const std::string config = job("mock: true train_prefix: \"x\"");
  auto r = run_command(kTessera + " train --config " + config + " --unset data.train_prefix");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(contains(r.output, "note: ")) << r.output;
  EXPECT_FALSE(contains(recorded(), "train_prefix")) << recorded();
  // Clearing the only dataset leaves nothing to train on; a field with a default gets it back.
  r = run_command(kTessera + " train --config " + job("train_prefix: \"x\"") + " --unset data.train_prefix");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "data.train_prefix is not set")) << r.output;
  r = run_command(kTessera + " train --config " + job("mock: true") + " --run-dir " + dir_.file("run2") +
                  " --unset train.global_batch --set train.global_batch=4 --unset data --set data.mock=true");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(read(dir_.file("run2/config.textproto")), "global_batch: 4"));
}

TEST_F(CommandLineOverrides, UnsetOfAnUnknownFieldIsAUsageError) {
  const auto r = run_command(kTessera + " train --config " + job("mock: true") + " --unset data.train_prefx");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--unset 'data.train_prefx': unknown field 'train_prefx' in 'data'")) << r.output;
  EXPECT_TRUE(contains(r.output, "did you mean 'train_prefix'?")) << r.output;
  const auto top = run_command(kTessera + " train --config " + job("mock: true") + " --unset modle");
  EXPECT_EQ(top.exit_code, 2) << top.output;
  EXPECT_TRUE(contains(top.output, "unknown field 'modle' at the top level")) << top.output;
}

TEST_F(CommandLineOverrides, RepeatedFieldFromTheCommandLine) {
  const std::string a = dataset("web"), b = dataset("books");
  // The command line's blend replaces the file's mock data (with a note) ...
  const std::string blend = " --set 'data.train_blend={prefix: \"" + a +
                            "\" weight: 0.7}' --set 'data.train_blend=" + "prefix: \"" + b + "\" weight: 0.3'";
  auto r = run_command(kTessera + " train --config " + job("mock: true") + blend);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "note: --set data.train_blend=")) << r.output;
  EXPECT_TRUE(contains(r.output, "overrides the config's data.mock=true, which is ignored: training on the blend of 2"))
      << r.output;
  std::string config = recorded();
  EXPECT_EQ(count(config, "train_blend {"), 2u) << config;
  EXPECT_TRUE(contains(config, "prefix: \"" + a + "\"")) << config;
  EXPECT_TRUE(contains(config, "weight: 0.3")) << config;
  EXPECT_TRUE(contains(config, "mock: false")) << config;
  // ... and the file's list: three in the file, one from the command line, one trained on.
  r = run_command(kTessera + " train --config " +
                  job("train_blend { prefix: \"" + a +
                      "\" weight: 1 } train_blend { prefix: \"x\" weight: 1 } "
                      "train_blend { prefix: \"y\" weight: 1 }") +
                  " --run-dir " + dir_.file("run2") + " --set 'data.train_blend={prefix: \"" + b + "\" weight: 2}'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(contains(r.output, "note: ")) << r.output;
  config = read(dir_.file("run2/config.textproto"));
  EXPECT_EQ(count(config, "train_blend {"), 1u) << config;
  EXPECT_TRUE(contains(config, "prefix: \"" + b + "\"")) << config;
  // An element that is not one.
  r = run_command(kTessera + " train --config " + job("mock: true") + " --set 'data.train_blend={prefx: \"a\"}'");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "unknown field 'prefx'")) << r.output;
  EXPECT_TRUE(contains(r.output, "did you mean 'prefix'?")) << r.output;
}

TEST_F(CommandLineOverrides, HiddenTestHooksAreAccepted) {
  const auto r =
      run_command(kTessera + " train --config " + job("mock: true") + " --debug-inject-loss-spike not-a-spike");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "--debug-inject-loss-spike takes STEP:COUNT, not 'not-a-spike'")) << r.output;
}

}  // namespace

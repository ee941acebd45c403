// Supervised fine-tuning through `tessera train` (data.loss_mask): with a mask of ones on conversations of
// exactly seq_len + 1 tokens it trains exactly as plain data on the same sequences; with a real mask, padding
// and truncation, the loss is the same in every layout (1 rank, tp=2, pp=2, dp=2 with micro-batches).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/check.h"
#include "launcher/data/indexed_dataset.h"
#include "launcher/data/sft_sampler.h"
#include "tests/cli_command.h"
#include "tests/run_command.h"
#include "tests/temp_dir.h"

namespace tessera {
namespace {

using testing::run_command;
using testing::TempDir;

const std::string& kEnvironment = testing::kCliEnvironment;
constexpr int kSeqLen = 16, kVocab = 128;

std::string tessera(const std::string& args, int ranks = 1) {
  const std::string launcher = ranks == 1 ? "" : str_cat(TESSERA_MPIEXEC, " --oversubscribe -np ", ranks, " ");
  return kEnvironment + launcher + TESSERA_BINARY + " " + args;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string job_text(const std::string& prefix, bool loss_mask, int steps) {
  return str_cat("model { arch: LLAMA vocab_size: ", kVocab,
                 " n_layer: 2 n_head: 4 n_kv_head: 2 n_embd: 32 ffn_hidden: 64 max_seq_len: ", kSeqLen,
                 " }\n"
                 "train { steps: ",
                 steps, " global_batch: 8 seq_len: ", kSeqLen,
                 " threads: 1 }\n"
                 "optimizer { lr: 1e-2 warmup_steps: 0 }\n"
                 "data { train_prefix: \"",
                 prefix, "\" loss_mask: ", loss_mask ? "true" : "false",
                 " }\n"
                 "checkpoint { every_steps: 0 save_on_exit: false }\n"
                 "logging { log_every: 1 }\n");
}

// The "loss" of every row of RUN_DIR/metrics.jsonl, as printed.
std::vector<std::string> losses(const std::string& run_dir) {
  std::ifstream metrics(run_dir + "/metrics.jsonl");
  std::vector<std::string> values;
  for (std::string line; std::getline(metrics, line);) {
    const size_t at = line.find("\"loss\": ");
    if (at == std::string::npos) continue;
    const size_t start = at + 8;
    values.push_back(line.substr(start, line.find_first_of(",}", start) - start));
  }
  return values;
}

std::vector<std::string> train(const TempDir& dir, const std::string& name, const std::string& prefix, bool mask,
                               int steps, int ranks = 1, const std::string& layout = "",
                               std::string* output = nullptr) {
  const std::string job = dir.file(name + ".textproto");
  testing::write_text_file(job, job_text(prefix, mask, steps));
  const auto r = run_command(tessera("train --config " + job + " --run-dir " + dir.file(name) + " " + layout, ranks));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  if (output != nullptr) *output = r.output;
  return losses(dir.file(name));
}

int32_t token(int64_t i) { return static_cast<int32_t>(3 + (i * 37 + i / 5) % (kVocab - 3)); }

TEST(SftCli, MaskOfOnesTrainsExactlyLikePlainDataOnTheSameSequences) {
  // 24 conversations of seq_len + 1 tokens sharing boundary tokens: the plain stream's windows are the
  // conversations, in the same order (SftSampler draws documents as GptSampler draws windows).
  TempDir dir;
  const int documents = 24;
  std::vector<int32_t> stream(static_cast<size_t>(documents * kSeqLen + 1));
  for (size_t i = 0; i < stream.size(); ++i) stream[i] = token(static_cast<int64_t>(i));
  IndexedDatasetWriter plain(dir.file("plain"), IndexedDType::kUInt16);
  plain.add_document(stream.data(), stream.size());
  plain.finalize();
  IndexedDatasetWriter sft(dir.file("sft"), IndexedDType::kUInt16);
  IndexedDatasetWriter mask(loss_mask_prefix(dir.file("sft")), IndexedDType::kUInt8);
  const std::vector<int32_t> ones(kSeqLen + 1, 1);
  for (int d = 0; d < documents; ++d) {
    sft.add_document(stream.data() + d * kSeqLen, kSeqLen + 1);
    mask.add_document(ones.data(), ones.size());
  }
  sft.finalize();
  mask.finalize();
  const auto want = train(dir, "plain_run", dir.file("plain"), false, 4);
  const auto got = train(dir, "sft_run", dir.file("sft"), true, 4);
  ASSERT_EQ(want.size(), 4u);
  EXPECT_EQ(got, want);
}

TEST(SftCli, MaskedLossIsTheSameInEveryLayout) {
  // Conversations of 5 to 27 tokens (some padded, some truncated), counted from their middle on.
  TempDir dir;
  IndexedDatasetWriter sft(dir.file("chat"), IndexedDType::kUInt16);
  IndexedDatasetWriter mask(loss_mask_prefix(dir.file("chat")), IndexedDType::kUInt8);
  int64_t next = 0, truncated = 0;
  for (int d = 0; d < 20; ++d) {
    const int length = 5 + (d * 7) % 23;
    truncated += length > kSeqLen + 1;
    std::vector<int32_t> t(static_cast<size_t>(length)), m(static_cast<size_t>(length));
    for (int j = 0; j < length; ++j) {
      t[static_cast<size_t>(j)] = token(next++);
      m[static_cast<size_t>(j)] = j >= length / 3 ? 1 : 0;
    }
    sft.add_document(t.data(), t.size());
    mask.add_document(m.data(), m.size());
  }
  sft.finalize();
  mask.finalize();
  ASSERT_GT(truncated, 0);

  std::string output;
  const auto reference = train(dir, "one", dir.file("chat"), true, 3, 1, "", &output);
  ASSERT_EQ(reference.size(), 3u);
  EXPECT_TRUE(contains(output, str_cat("warning: ", dir.file("chat"), ": ", truncated,
                                       " of 20 conversations are "
                                       "longer than train.seq_len + 1")))
      << output;
  // The same data without its mask trains on every target: another loss.
  const auto unmasked = train(dir, "unmasked", dir.file("chat"), false, 1);
  ASSERT_EQ(unmasked.size(), 1u);
  EXPECT_NE(unmasked[0], reference[0]);
  for (const auto& [ranks, layout] :
       std::vector<std::pair<int, std::string>>{{2, "--set parallel.tp=2"},
                                                {2, "--set parallel.pp=2 --set parallel.micro_batches=2"},
                                                {2, "--set parallel.dp=2 --set parallel.micro_batches=2"}}) {
    SCOPED_TRACE(layout);
    const auto got = train(dir, "layout", dir.file("chat"), true, 3, ranks, layout);
    ASSERT_EQ(got.size(), reference.size());
    for (size_t s = 0; s < got.size(); ++s) {
      const double want = std::stod(reference[s]);
      EXPECT_LE(std::fabs(std::stod(got[s]) - want), 1e-5 * want) << "step " << s + 1;
    }
    std::filesystem::remove_all(dir.file("layout"));
  }
}

}  // namespace
}  // namespace tessera

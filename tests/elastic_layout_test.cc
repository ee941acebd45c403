// The elastic layout decision (Note [Elastic layout] in launcher/checkpoints/elastic_layout.h): which layout a
// checkpoint resumes in on another number of ranks, and when that is refused.
#include "launcher/checkpoints/elastic_layout.h"

#include <gtest/gtest.h>

#include "core/check.h"

namespace tessera {
namespace {

SavedLayout saved(int tp, int pp, int dp, int micro_batches, int global_batch) {
  return SavedLayout{tp, pp, dp, micro_batches, global_batch};
}

TEST(ElasticLayout, SameWorldKeepsTheLayout) {
  EXPECT_FALSE(elastic_layout(saved(2, 1, 2, 1, 8), 8, 4).has_value());
  EXPECT_FALSE(elastic_layout(saved(1, 2, 3, 2, 12), 12, 6).has_value());
}

TEST(ElasticLayout, HalfTheNodesDoublesTheMicroBatches) {
  // tp=2 x dp=2 with one micro-batch of 4; on 2 ranks: dp=1, two micro-batches of 4, the same 8 sequences.
  const auto layout = elastic_layout(saved(2, 1, 2, 1, 8), 8, 2);
  ASSERT_TRUE(layout.has_value());
  EXPECT_EQ(layout->tp, 2);
  EXPECT_EQ(layout->pp, 1);
  EXPECT_EQ(layout->dp, 1);
  EXPECT_EQ(layout->micro_batch_size, 4);
  EXPECT_EQ(layout->micro_batches, 2);
  EXPECT_EQ(layout->dp * layout->micro_batches * layout->micro_batch_size, 8);
  EXPECT_NE(layout->change.find("dp=2 -> 1"), std::string::npos) << layout->change;
  EXPECT_NE(layout->change.find("global batch 8 unchanged"), std::string::npos) << layout->change;
}

TEST(ElasticLayout, MoreNodesShrinkTheMicroBatchCountFirst) {
  // dp=1, 4 micro-batches of 2 (batch 8) on pp=2; 8 ranks: dp=4, one micro-batch of 2.
  const auto layout = elastic_layout(saved(1, 2, 1, 4, 8), 8, 8);
  ASSERT_TRUE(layout.has_value());
  EXPECT_EQ(layout->dp, 4);
  EXPECT_EQ(layout->micro_batch_size, 2);
  EXPECT_EQ(layout->micro_batches, 1);
}

TEST(ElasticLayout, MicroBatchesShrinkWhenTheirSizeNoLongerFits) {
  // One micro-batch of 8 on dp=1; dp=4 leaves 2 sequences per DP rank: one micro-batch of 2.
  auto layout = elastic_layout(saved(1, 1, 1, 1, 8), 8, 4);
  ASSERT_TRUE(layout.has_value());
  EXPECT_EQ(layout->micro_batch_size, 2);
  EXPECT_EQ(layout->micro_batches, 1);
  // 12 sequences, micro-batches of 4 on dp=1; dp=2 gives 6 per rank: 4 does not divide 6, so 3 (two of them).
  layout = elastic_layout(saved(1, 1, 1, 3, 12), 12, 2);
  ASSERT_TRUE(layout.has_value());
  EXPECT_EQ(layout->micro_batch_size, 3);
  EXPECT_EQ(layout->micro_batches, 2);
}

TEST(ElasticLayout, RefusesAWorldThatTpTimesPpDoesNotDivide) {
  try {
    elastic_layout(saved(2, 2, 1, 1, 8), 8, 6);
    FAIL() << "no error";
  } catch (const ConfigError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("tp * pp = 4 does not divide"), std::string::npos) << message;
    EXPECT_NE(message.find("multiple of 4"), std::string::npos) << message;
  }
}

TEST(ElasticLayout, RefusesADpThatDoesNotDivideTheGlobalBatch) {
  try {
    elastic_layout(saved(1, 1, 2, 1, 8), 8, 3);
    FAIL() << "no error";
  } catch (const ConfigError& error) {
    const std::string message = error.what();
    EXPECT_NE(message.find("dp would be 3, which does not divide train.global_batch (8)"), std::string::npos)
        << message;
  }
}

TEST(ElasticLayout, LayoutOverridesOnTheCommandLineWin) {
  EXPECT_TRUE(overrides_set_layout({"train.steps=10", "parallel.dp=2"}));
  EXPECT_TRUE(overrides_set_layout({"parallel.micro_batches=4"}));
  EXPECT_TRUE(overrides_set_layout({"parallel.tp=1"}));
  EXPECT_FALSE(overrides_set_layout({"parallel.timeout_s=10", "parallel.zero_stage=1", "train.steps=3"}));
  EXPECT_FALSE(overrides_set_layout({}));
}

TEST(ElasticLayout, ReadsTheSavedLayoutFromTheManifest) {
  checkpoint::Manifest manifest;
  manifest.mutable_layout()->set_tp(2);
  manifest.mutable_layout()->set_pp(1);
  manifest.mutable_layout()->set_dp(2);
  manifest.mutable_config()->mutable_parallel()->set_micro_batches(3);
  manifest.mutable_config()->mutable_train()->set_global_batch(12);
  const SavedLayout s = saved_layout_of(manifest);
  EXPECT_EQ(s.tp, 2);
  EXPECT_EQ(s.pp, 1);
  EXPECT_EQ(s.dp, 2);
  EXPECT_EQ(s.micro_batches, 3);
  EXPECT_EQ(s.global_batch, 12);
}

}  // namespace
}  // namespace tessera

// Samplers: deterministic global order, inputs/targets alignment, epoch coverage, thread safety, mock data.
#include "launcher/data/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "core/check.h"
#include "launcher/data/splitmix64.h"
#include "tests/temp_dir.h"

namespace tessera {
namespace {

using testing::error_message;
using testing::TempDir;

// A dataset whose token at stream position p is p itself, in documents of uneven lengths, so a sample's first
// input names its window.
class PositionDataset {
 public:
  explicit PositionDataset(int64_t tokens) {
    IndexedDatasetWriter writer(dir_.file("positions"), IndexedDType::kInt32);
    std::vector<int32_t> document;
    for (int64_t p = 0; p < tokens; ++p) {
      document.push_back(static_cast<int32_t>(p));
      if (document.size() == static_cast<size_t>(3 + p % 11) || p + 1 == tokens) {
        writer.add_document(document.data(), document.size());
        document.clear();
      }
    }
    writer.finalize();
    dataset_ = std::make_unique<IndexedDataset>(IndexedDataset::open(dir_.file("positions")));
  }
  const IndexedDataset& get() const { return *dataset_; }

 private:
  TempDir dir_;
  std::unique_ptr<IndexedDataset> dataset_;
};

std::vector<int64_t> windows(const GptSampler& sampler, int64_t first, int64_t count) {
  std::vector<int64_t> out;
  for (int64_t g = first; g < first + count; ++g) out.push_back(sampler.window(g));
  return out;
}

TEST(SplitMix64Test, MatchesReferenceOutputs) {
  // Vigna's splitmix64.c seeded with 0.
  SplitMix64 rng(0);
  EXPECT_EQ(rng.next(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(rng.next(), 0x6e789e6aa1b965f4ULL);
  EXPECT_EQ(rng.next(), 0x06c45d188009454fULL);
}

TEST(GptSamplerTest, WindowCount) {
  PositionDataset data(101);
  EXPECT_EQ(GptSampler(data.get(), 10, 1).samples_per_epoch(), 10);  // needs tokens up to 100
  EXPECT_EQ(GptSampler(data.get(), 100, 1).samples_per_epoch(), 1);
  EXPECT_EQ(GptSampler(data.get(), 7, 1).samples_per_epoch(), 14);
}

TEST(GptSamplerTest, InputsAndTargetsShiftByOne) {
  PositionDataset data(1000);
  const int seq_len = 16;
  GptSampler sampler(data.get(), seq_len, 42);
  std::vector<int32_t> inputs(seq_len), targets(seq_len);
  for (int64_t g = 0; g < 3 * sampler.samples_per_epoch(); g += 7) {
    sampler.get(g, inputs.data(), targets.data());
    const int64_t start = sampler.window(g) * seq_len;
    for (int i = 0; i < seq_len; ++i) {
      ASSERT_EQ(inputs[i], start + i);
      ASSERT_EQ(targets[i], start + i + 1);
    }
  }
}

TEST(GptSamplerTest, SameSeedSameOrderInAnotherInstance) {
  PositionDataset data(5000);
  GptSampler a(data.get(), 32, 7);
  GptSampler b(data.get(), 32, 7);
  // b is asked in a different order, so its epochs are built in a different order too.
  std::vector<int64_t> from_b(3 * b.samples_per_epoch());
  for (int64_t g = static_cast<int64_t>(from_b.size()) - 1; g >= 0; --g) from_b[g] = b.window(g);
  EXPECT_EQ(windows(a, 0, static_cast<int64_t>(from_b.size())), from_b);
}

TEST(GptSamplerTest, EveryWindowExactlyOncePerEpoch) {
  PositionDataset data(3001);
  GptSampler sampler(data.get(), 10, 3);
  const int64_t w = sampler.samples_per_epoch();
  ASSERT_EQ(w, 300);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    auto order = windows(sampler, epoch * w, w);
    std::sort(order.begin(), order.end());
    for (int64_t i = 0; i < w; ++i) ASSERT_EQ(order[i], i) << "epoch " << epoch;
  }
}

TEST(GptSamplerTest, SeedsAndEpochsGiveDifferentOrders) {
  PositionDataset data(3001);
  GptSampler a(data.get(), 10, 1);
  GptSampler b(data.get(), 10, 2);
  const int64_t w = a.samples_per_epoch();
  EXPECT_NE(windows(a, 0, w), windows(b, 0, w));
  EXPECT_NE(windows(a, 0, w), windows(a, w, w));
  EXPECT_NE(windows(a, w, w), windows(a, 2 * w, w));
  // Not the identity either.
  std::vector<int64_t> identity(w);
  for (int64_t i = 0; i < w; ++i) identity[i] = i;
  EXPECT_NE(windows(a, 0, w), identity);
}

// The order is part of the checkpoint contract (resume by sample count): it must never change. The expected
// values come from an independent reimplementation of SplitMix64 + Fisher-Yates.
TEST(GptSamplerTest, OrderIsPinned) {
  PositionDataset data(101);
  GptSampler sampler(data.get(), 10, 1234);
  EXPECT_EQ(windows(sampler, 0, 10), (std::vector<int64_t>{9, 7, 6, 4, 8, 1, 3, 2, 5, 0}));
  EXPECT_EQ(windows(sampler, 10, 10), (std::vector<int64_t>{4, 0, 1, 3, 5, 7, 9, 6, 8, 2}));
}

TEST(GptSamplerTest, ThreadsSeeTheSameSamples) {
  PositionDataset data(2000);
  const int seq_len = 8;
  GptSampler reference(data.get(), seq_len, 5);
  const int64_t total = 6 * reference.samples_per_epoch();
  std::vector<int32_t> expected(total * seq_len * 2);
  for (int64_t g = 0; g < total; ++g) {
    reference.get(g, &expected[g * seq_len * 2], &expected[g * seq_len * 2 + seq_len]);
  }
  GptSampler shared(data.get(), seq_len, 5);
  std::vector<int32_t> got(expected.size(), -1);
  std::vector<std::thread> threads;
  const int kThreads = 4;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int64_t g = t; g < total; g += kThreads) {
        shared.get(g, &got[g * seq_len * 2], &got[g * seq_len * 2 + seq_len]);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(got, expected);
}

TEST(GptSamplerTest, TooSmallDatasetSaysHowManyTokens) {
  PositionDataset data(8);
  const std::string message = error_message<DataError>([&] { GptSampler(data.get(), 8, 1); });
  EXPECT_NE(message.find("holds 8 tokens"), std::string::npos) << message;
  EXPECT_NE(message.find("at least 9 are needed"), std::string::npos) << message;
  EXPECT_NO_THROW(GptSampler(data.get(), 7, 1));
  EXPECT_THROW(GptSampler(data.get(), 0, 1), ConfigError);
}

TEST(MockSamplerTest, DeterministicPerSeedAndIndex) {
  const int seq_len = 32;
  MockSampler a(100, seq_len, 9), b(100, seq_len, 9), c(100, seq_len, 10);
  std::vector<int32_t> ia(seq_len), ta(seq_len), ib(seq_len), tb(seq_len), ic(seq_len), tc(seq_len);
  for (int64_t g : {0, 1, 17, 123456789}) {
    a.get(g, ia.data(), ta.data());
    b.get(g, ib.data(), tb.data());
    c.get(g, ic.data(), tc.data());
    EXPECT_EQ(ia, ib);
    EXPECT_EQ(ta, tb);
    EXPECT_NE(ia, ic);
  }
  std::vector<int32_t> other(seq_len), other_targets(seq_len);
  a.get(1, other.data(), other_targets.data());
  a.get(0, ia.data(), ta.data());
  EXPECT_NE(ia, other);
}

TEST(MockSamplerTest, FollowsAFixedMarkovChain) {
  const int vocab = 50, seq_len = 64;
  MockSampler sampler(vocab, seq_len, 1);
  std::vector<int32_t> inputs(seq_len), targets(seq_len);
  std::map<int32_t, std::set<int32_t>> successors;
  std::map<std::pair<int32_t, int32_t>, int64_t> pair_counts;
  std::map<int32_t, int64_t> token_counts;
  for (int64_t g = 0; g < 2000; ++g) {
    sampler.get(g, inputs.data(), targets.data());
    for (int i = 0; i < seq_len; ++i) {
      ASSERT_GE(inputs[i], 0);
      ASSERT_LT(inputs[i], vocab);
      if (i + 1 < seq_len) {
        ASSERT_EQ(targets[i], inputs[i + 1]);
      }
      successors[inputs[i]].insert(targets[i]);
      ++pair_counts[{inputs[i], targets[i]}];
      ++token_counts[inputs[i]];
    }
  }
  for (const auto& [token, next] : successors) EXPECT_LE(next.size(), size_t{MockSampler::kBranching}) << token;
  // The empirical conditional entropy approaches optimal_loss().
  double entropy = 0, total = 0;
  for (const auto& [pair, count] : pair_counts) {
    const double p = static_cast<double>(count) / token_counts[pair.first];
    entropy -= count * std::log(p);
    total += count;
  }
  EXPECT_NEAR(entropy / total, MockSampler::optimal_loss(), 0.02);
  EXPECT_NEAR(MockSampler::optimal_loss(), 1.208, 0.001);
}

// ---- BlendedSampler ------------------------------------------------------------------------------------------

// A stand-in sampler whose sample k has inputs [id, k, k, ...]: a blended sample names its dataset and index.
class LabelSampler final : public Sampler {
 public:
  LabelSampler(int id, int seq_len) : id_(id), seq_len_(seq_len) {}
  int seq_len() const override { return seq_len_; }
  void get(int64_t global_index, int32_t* inputs, int32_t* targets) const override {
    for (int t = 0; t < seq_len_; ++t) {
      inputs[t] = t == 0 ? id_ : static_cast<int32_t>(global_index);
      targets[t] = static_cast<int32_t>(global_index);
    }
  }

 private:
  int id_, seq_len_;
};

BlendedSampler label_blend(const std::vector<double>& weights) {
  std::vector<std::unique_ptr<Sampler>> samplers;
  std::vector<std::string> names;
  for (size_t i = 0; i < weights.size(); ++i) {
    samplers.push_back(std::make_unique<LabelSampler>(static_cast<int>(i), 4));
    names.push_back("d" + std::to_string(i));
  }
  return BlendedSampler(std::move(samplers), weights, names);
}

TEST(BlendedSamplerTest, SharesFollowTheWeightsInEveryPrefixOfABlock) {
  const std::vector<double> weights = {0.7, 0.2, 0.1};
  const BlendedSampler blend = label_blend(weights);
  std::vector<int64_t> taken(3, 0);
  for (int64_t j = 0; j < BlendedSampler::kBlock; ++j) {
    ++taken[static_cast<size_t>(blend.source(j).first)];
    // Every prefix of a block is within one sample of the exact shares.
    for (size_t d = 0; d < 3; ++d) {
      ASSERT_LE(std::fabs(static_cast<double>(taken[d]) - weights[d] * static_cast<double>(j + 1)), 1.0)
          << "dataset " << d << " after " << j + 1 << " samples";
    }
  }
  // Blocks repeat the same assignment, so over many of them each share is off by at most half a sample per block.
  for (size_t d = 0; d < 3; ++d) {
    EXPECT_LE(std::fabs(blend.per_block(static_cast<int>(d)) - weights[d] * BlendedSampler::kBlock), 0.5);
    EXPECT_EQ(blend.source(7 * BlendedSampler::kBlock + 5).first, blend.source(5).first);
  }
  EXPECT_EQ(blend.per_block(0) + blend.per_block(1) + blend.per_block(2), BlendedSampler::kBlock);
}

TEST(BlendedSamplerTest, EachDatasetIsReadInItsOwnOrderWithoutGapsOrRepeats) {
  const BlendedSampler blend = label_blend({3, 1});  // unnormalized weights
  std::vector<int64_t> next(2, 0);
  std::vector<int32_t> inputs(4), targets(4);
  for (int64_t g = 0; g < 2 * BlendedSampler::kBlock + 17; ++g) {
    blend.get(g, inputs.data(), targets.data());
    const size_t d = static_cast<size_t>(inputs[0]);
    ASSERT_LT(d, 2u);
    ASSERT_EQ(inputs[1], next[d]++) << "sample " << g;
    ASSERT_EQ(blend.source(g), std::make_pair(static_cast<int>(d), static_cast<int64_t>(inputs[1])));
  }
  EXPECT_EQ(blend.per_block(0), 3 * BlendedSampler::kBlock / 4);
}

TEST(BlendedSamplerTest, IsAPureFunctionOfTheIndex) {
  const BlendedSampler a = label_blend({0.5, 0.25, 0.25}), b = label_blend({0.5, 0.25, 0.25});
  for (int64_t g : {int64_t{0}, int64_t{4095}, int64_t{4096}, int64_t{123456789}}) EXPECT_EQ(a.source(g), b.source(g));
}

TEST(BlendedSamplerTest, ADatasetTooSmallForOneSampleABlockIsNamed) {
  const std::string message = error_message<ConfigError>([] { label_blend({1.0, 1e-6}); });
  EXPECT_NE(message.find("'d1' has weight 1e-06"), std::string::npos) << message;
  EXPECT_NE(message.find("raise its weight or leave it out"), std::string::npos) << message;
}

}  // namespace
}  // namespace tessera

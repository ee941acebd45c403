// Training samples as a pure function of (seed, global sample index).
//
// Note [Global data order]. Sample g of a run is the same on every machine, rank and layout: the samplers here
// map g to tokens with no state that depends on who asks. DP rank r of d takes its slice of each global
// batch; resuming needs only the number of samples consumed so far.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "launcher/data/indexed_dataset.h"

namespace tessera {

// A source of (inputs, targets) sequences; targets[i] is the token that follows inputs[i].
class Sampler {
 public:
  virtual ~Sampler() = default;
  // Tokens per sample.
  virtual int seq_len() const = 0;
  // Fills seq_len() inputs and seq_len() targets for global sample global_index >= 0. Deterministic in
  // (seed, global_index). Thread-safe.
  virtual void get(int64_t global_index, int32_t* inputs, int32_t* targets) const = 0;
  // Whether samples carry a loss mask (supervised fine-tuning data, SftSampler); without one every target
  // counts.
  virtual bool has_loss_mask() const { return false; }
  // mask[i] = 1 when targets[i] of sample global_index counts in the loss, else 0 (seq_len() values).
  // Deterministic in (seed, global_index). Thread-safe. The default: every target counts.
  virtual void get_loss_mask(int64_t global_index, uint8_t* mask) const;
};

// The per-epoch order of a sampler's n items: a Fisher-Yates permutation of [0, n) driven by SplitMix64 seeded
// from (seed, epoch). Built lazily under a mutex; the two most recent epochs are kept. Thread-safe.
class EpochPermutations {
 public:
  EpochPermutations(uint64_t seed, int64_t n) : seed_(seed), n_(n) {}
  // Item at position i of epoch's order. Preconditions: epoch >= 0, 0 <= i < n.
  uint32_t at(int64_t epoch, int64_t i) const;

 private:
  using Permutation = std::vector<uint32_t>;
  std::shared_ptr<const Permutation> get(int64_t epoch) const;

  uint64_t seed_;
  int64_t n_;
  mutable std::mutex mutex_;
  mutable std::deque<std::pair<int64_t, std::shared_ptr<const Permutation>>> cache_;
};

// Samples from a tokenized dataset. The concatenated token stream of all documents (each ending with EOS, as
// `tessera prepare` writes them) is cut into windows of seq_len + 1 tokens at stride seq_len:
//   window w = tokens [w * seq_len, w * seq_len + seq_len + 1),  w in [0, W),  W = (num_tokens - 1) / seq_len
// so consecutive windows share one token and every token but the last is a target exactly once per epoch.
// Global sample g belongs to epoch e = g / W; within it, position g % W is mapped to a window through a
// Fisher-Yates permutation of [0, W) driven by SplitMix64 seeded from (seed, e) (EpochPermutations).
class GptSampler final : public Sampler {
 public:
  // Keeps a reference to dataset, which must outlive the sampler. Throws DataError if the dataset has fewer
  // than seq_len + 1 tokens (saying how many are needed) and ConfigError if seq_len < 1. shuffle false: the
  // windows in order, every epoch (evaluation over a whole dataset); seed is then unused.
  GptSampler(const IndexedDataset& dataset, int seq_len, uint64_t seed, bool shuffle = true);

  int seq_len() const override { return seq_len_; }
  // W, the number of windows.
  int64_t samples_per_epoch() const { return windows_; }
  // The window that global sample global_index reads. Thread-safe.
  int64_t window(int64_t global_index) const;
  // Thread-safe.
  void get(int64_t global_index, int32_t* inputs, int32_t* targets) const override;

 private:
  const IndexedDataset& dataset_;
  int seq_len_;
  bool shuffle_;
  int64_t windows_;
  std::unique_ptr<EpochPermutations> permutations_;
};

// Synthetic but learnable data for runs without a dataset: a fixed random first-order Markov chain over the
// vocabulary. Each token has kBranching distinct successors chosen by seed, taken with probabilities
// kSuccessorProbabilities; a sample starts at a uniformly random token. The best possible loss is therefore
// optimal_loss() nats per token (about 1.21), against log(vocab_size) for a model that has learned nothing.
class MockSampler final : public Sampler {
 public:
  static constexpr int kBranching = 4;
  static constexpr double kSuccessorProbabilities[kBranching] = {0.5, 0.25, 0.15, 0.1};

  // Throws ConfigError if vocab_size < kBranching or seq_len < 1.
  MockSampler(int vocab_size, int seq_len, uint64_t seed);

  int seq_len() const override { return seq_len_; }
  // Thread-safe (no mutable state).
  void get(int64_t global_index, int32_t* inputs, int32_t* targets) const override;
  // The entropy of one transition: the expected loss of a model that knows the chain.
  static double optimal_loss();

 private:
  int vocab_size_;
  int seq_len_;
  uint64_t seed_;
  std::vector<int32_t> successors_;  // [vocab_size][kBranching]
};

// Samples from several datasets in given proportions (data.train_blend). Global sample g falls in block
// b = g / kBlock at position j = g % kBlock. One block's assignment of positions to datasets is fixed once from the
// normalized weights: the dataset with the largest remaining deficit, weight * (position + 1) - taken so far,
// takes each position (ties to the lower index), so every prefix of a block is as close to the weights as whole
// samples allow and each dataset gets count_d = its positions per block. Sample g is then sample
// b * count_d + (rank of j among d's positions) of dataset d's own sampler, whose order comes from (seed, d).
// Everything is a pure function of (weights, seed, g), as Note [Global data order] requires.
class BlendedSampler final : public Sampler {
 public:
  static constexpr int kBlock = 4096;

  // samplers[i] draws from dataset i, with relative share weights[i] > 0; all have the same seq_len. A dataset
  // whose share rounds to no position of a block is a ConfigError naming it (its weight is below 1/kBlock).
  BlendedSampler(std::vector<std::unique_ptr<Sampler>> samplers, std::vector<double> weights,
                 std::vector<std::string> names);

  int seq_len() const override { return samplers_.front()->seq_len(); }
  void get(int64_t global_index, int32_t* inputs, int32_t* targets) const override;
  // Masked when any dataset of the blend is; the others count every target.
  bool has_loss_mask() const override { return has_loss_mask_; }
  void get_loss_mask(int64_t global_index, uint8_t* mask) const override;
  // The dataset and its own sample index that global sample global_index reads.
  std::pair<int, int64_t> source(int64_t global_index) const;
  // Samples of dataset i in each block of kBlock.
  int per_block(int i) const { return counts_[static_cast<size_t>(i)]; }

 private:
  std::vector<std::unique_ptr<Sampler>> samplers_;
  std::vector<int> counts_;        // positions per block, by dataset
  std::vector<uint16_t> dataset_;  // [kBlock]: the dataset of each position
  std::vector<int32_t> rank_;      // [kBlock]: how many earlier positions of the block went to that dataset
  bool has_loss_mask_ = false;
};

}  // namespace tessera

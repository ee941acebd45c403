// Deterministic samplers over indexed datasets and a synthetic Markov chain. See Note [Global data order].
#include "launcher/data/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/check.h"
#include "launcher/data/splitmix64.h"

namespace tessera {
namespace {

// Separate streams for the different random choices made from one seed.
constexpr uint64_t kEpochStream = 0x6570'6f63'6800'0001ULL;
constexpr uint64_t kChainStream = 0x6368'6169'6e00'0002ULL;
constexpr uint64_t kMockSampleStream = 0x6d6f'636b'0000'0003ULL;
constexpr size_t kCachedEpochs = 2;

}  // namespace

void Sampler::get_loss_mask(int64_t, uint8_t* mask) const { std::fill(mask, mask + seq_len(), uint8_t{1}); }

// ---- EpochPermutations ------------------------------------------------------------------------------------

std::shared_ptr<const EpochPermutations::Permutation> EpochPermutations::get(int64_t epoch) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto& [cached_epoch, cached] : cache_) {
    if (cached_epoch == epoch) return cached;
  }
  auto order = std::make_shared<Permutation>(static_cast<size_t>(n_));
  std::iota(order->begin(), order->end(), 0u);
  SplitMix64 rng(hash_pair(seed_ ^ kEpochStream, static_cast<uint64_t>(epoch)));
  for (size_t i = order->size() - 1; i > 0; --i) {
    const auto j = static_cast<size_t>(rng.uniform(i + 1));
    std::swap((*order)[i], (*order)[j]);
  }
  cache_.emplace_back(epoch, order);
  if (cache_.size() > kCachedEpochs) cache_.pop_front();
  return order;
}

uint32_t EpochPermutations::at(int64_t epoch, int64_t i) const {
  TS_ASSERT(epoch >= 0 && i >= 0 && i < n_, "permutation position ", i, " of epoch ", epoch);
  return (*get(epoch))[static_cast<size_t>(i)];
}

// ---- BlendedSampler ---------------------------------------------------------------------------------------

BlendedSampler::BlendedSampler(std::vector<std::unique_ptr<Sampler>> samplers, std::vector<double> weights,
                               std::vector<std::string> names)
    : samplers_(std::move(samplers)), counts_(samplers_.size(), 0), dataset_(kBlock), rank_(kBlock) {
  TS_ASSERT(!samplers_.empty() && weights.size() == samplers_.size() && names.size() == samplers_.size(), "blend of ",
            samplers_.size(), " samplers, ", weights.size(), " weights, ", names.size(), " names");
  TS_ASSERT(samplers_.size() < 65536, "too many datasets in a blend");
  double total = 0;
  for (double w : weights) {
    TS_ASSERT(w > 0 && std::isfinite(w), "blend weight ", w);
    total += w;
  }
  for (const auto& sampler : samplers_) {
    TS_ASSERT(sampler->seq_len() == samplers_.front()->seq_len(), "blended samplers differ in seq_len");
    has_loss_mask_ = has_loss_mask_ || sampler->has_loss_mask();
  }
  for (int j = 0; j < kBlock; ++j) {
    size_t best = 0;
    double best_deficit = -std::numeric_limits<double>::infinity();
    for (size_t d = 0; d < samplers_.size(); ++d) {
      const double deficit = weights[d] / total * (j + 1) - counts_[d];
      if (deficit > best_deficit) {
        best_deficit = deficit;
        best = d;
      }
    }
    dataset_[static_cast<size_t>(j)] = static_cast<uint16_t>(best);
    rank_[static_cast<size_t>(j)] = counts_[best]++;
  }
  for (size_t d = 0; d < samplers_.size(); ++d) {
    TS_CHECK(counts_[d] > 0, ConfigError, "data.train_blend: '", names[d], "' has weight ", weights[d], " of ", total,
             ", less than one sample in ", kBlock, ": raise its weight or leave it out");
  }
}

std::pair<int, int64_t> BlendedSampler::source(int64_t global_index) const {
  TS_ASSERT(global_index >= 0, "negative sample index");
  const int64_t block = global_index / kBlock;
  const size_t j = static_cast<size_t>(global_index % kBlock);
  const int d = dataset_[j];
  return {d, block * counts_[static_cast<size_t>(d)] + rank_[j]};
}

void BlendedSampler::get(int64_t global_index, int32_t* inputs, int32_t* targets) const {
  const auto [d, index] = source(global_index);
  samplers_[static_cast<size_t>(d)]->get(index, inputs, targets);
}

void BlendedSampler::get_loss_mask(int64_t global_index, uint8_t* mask) const {
  const auto [d, index] = source(global_index);
  samplers_[static_cast<size_t>(d)]->get_loss_mask(index, mask);
}

// ---- GptSampler -------------------------------------------------------------------------------------------

GptSampler::GptSampler(const IndexedDataset& dataset, int seq_len, uint64_t seed, bool shuffle)
    : dataset_(dataset), seq_len_(seq_len), shuffle_(shuffle), windows_(0) {
  TS_CHECK(seq_len >= 1, ConfigError, "sequence length must be at least 1, got ", seq_len);
  const int64_t tokens = dataset.num_tokens();
  TS_CHECK(tokens >= static_cast<int64_t>(seq_len) + 1, DataError, dataset.bin_path(), " holds ", tokens,
           " tokens, too few for one sample of sequence length ", seq_len, ": at least ",
           static_cast<int64_t>(seq_len) + 1, " are needed; use more text or a shorter sequence length");
  windows_ = (tokens - 1) / seq_len;
  TS_CHECK(windows_ <= static_cast<int64_t>(std::numeric_limits<uint32_t>::max()), DataError, dataset.bin_path(),
           " gives ", windows_, " samples per epoch, more than the sampler's limit of 2^32-1; split the data into ",
           "several datasets or use a longer sequence length");
  permutations_ = std::make_unique<EpochPermutations>(seed, windows_);
}

int64_t GptSampler::window(int64_t global_index) const {
  TS_ASSERT(global_index >= 0, "negative sample index ", global_index);
  if (!shuffle_) return global_index % windows_;
  const int64_t epoch = global_index / windows_;
  return permutations_->at(epoch, global_index % windows_);
}

void GptSampler::get(int64_t global_index, int32_t* inputs, int32_t* targets) const {
  const int64_t start = window(global_index) * seq_len_;
  dataset_.read_tokens(start, seq_len_, inputs);
  std::copy(inputs + 1, inputs + seq_len_, targets);
  dataset_.read_tokens(start + seq_len_, 1, targets + seq_len_ - 1);
}

// ---- MockSampler ------------------------------------------------------------------------------------------

MockSampler::MockSampler(int vocab_size, int seq_len, uint64_t seed)
    : vocab_size_(vocab_size), seq_len_(seq_len), seed_(seed) {
  TS_CHECK(vocab_size >= kBranching, ConfigError, "the mock data needs a vocabulary of at least ", kBranching,
           " tokens, got ", vocab_size);
  TS_CHECK(seq_len >= 1, ConfigError, "sequence length must be at least 1, got ", seq_len);
  successors_.resize(static_cast<size_t>(vocab_size) * kBranching);
  for (int token = 0; token < vocab_size; ++token) {
    SplitMix64 rng(hash_pair(seed ^ kChainStream, static_cast<uint64_t>(token)));
    int32_t* next = &successors_[static_cast<size_t>(token) * kBranching];
    for (int k = 0; k < kBranching; ++k) {
      int32_t candidate;
      do {
        candidate = static_cast<int32_t>(rng.uniform(static_cast<uint64_t>(vocab_size)));
      } while (std::find(next, next + k, candidate) != next + k);
      next[k] = candidate;
    }
  }
}

void MockSampler::get(int64_t global_index, int32_t* inputs, int32_t* targets) const {
  TS_ASSERT(global_index >= 0, "negative sample index ", global_index);
  SplitMix64 rng(hash_pair(seed_ ^ kMockSampleStream, static_cast<uint64_t>(global_index)));
  auto token = static_cast<int32_t>(rng.uniform(static_cast<uint64_t>(vocab_size_)));
  for (int i = 0; i < seq_len_; ++i) {
    inputs[i] = token;
    const double r = rng.uniform_double();
    int k = 0;
    double cumulative = kSuccessorProbabilities[0];
    while (k + 1 < kBranching && r >= cumulative) cumulative += kSuccessorProbabilities[++k];
    token = successors_[static_cast<size_t>(token) * kBranching + k];
    targets[i] = token;
  }
}

double MockSampler::optimal_loss() {
  double entropy = 0;
  for (double p : kSuccessorProbabilities) entropy -= p * std::log(p);
  return entropy;
}

}  // namespace tessera

// Samples of supervised fine-tuning data: one conversation per sample, with the loss mask that
// `tessera prepare --format sft` writes next to the tokens. See Note [Global data order] in sampler.h.
#pragma once

#include <cstdint>

#include "launcher/data/indexed_dataset.h"
#include "launcher/data/sampler.h"

namespace tessera {

// The dataset of a loss mask that belongs to the tokens at `prefix`: prefix + "_mask" (PREFIX_train ->
// PREFIX_train_mask.{bin,idx}).
std::string loss_mask_prefix(const std::string& prefix);

// Global sample g is document permutation_e(g mod D) of epoch e = g / D (D documents, the permutation that
// GptSampler uses for D windows, from (seed, e)). Its tokens, cut to seq_len + 1 when longer (truncated) and
// padded to seq_len + 1 with pad_id when shorter, give inputs (the first seq_len) and targets (the last); a
// target counts in the loss when the mask of its token is 1, and padding never counts. Documents are not
// packed: a sample holds one conversation.
class SftSampler final : public Sampler {
 public:
  // tokens and mask must outlive the sampler and have identical document lengths (DataError naming the mask
  // file otherwise, or when a mask value is not 0 or 1). ConfigError if seq_len < 1; DataError for an empty
  // dataset. shuffle false: documents in order (seed unused).
  SftSampler(const IndexedDataset& tokens, const IndexedDataset& mask, int seq_len, uint64_t seed, int32_t pad_id,
             bool shuffle = true);

  int seq_len() const override { return seq_len_; }
  int64_t samples_per_epoch() const { return tokens_.num_documents(); }
  // The document that global sample global_index reads.
  int64_t document(int64_t global_index) const;
  // Documents longer than seq_len + 1 tokens, whose end is cut off.
  int64_t truncated_documents() const { return truncated_; }

  void get(int64_t global_index, int32_t* inputs, int32_t* targets) const override;
  bool has_loss_mask() const override { return true; }
  void get_loss_mask(int64_t global_index, uint8_t* mask) const override;

 private:
  const IndexedDataset& tokens_;
  const IndexedDataset& mask_;
  int seq_len_;
  int32_t pad_id_;
  bool shuffle_;
  int64_t truncated_ = 0;
  EpochPermutations permutations_;
};

}  // namespace tessera

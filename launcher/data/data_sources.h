// The training and validation token sources a job config asks for: Megatron-format datasets read through the
// deterministic GptSampler (several blended by weight through BlendedSampler), or generated tokens (data.mock).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "launcher/data/indexed_dataset.h"
#include "launcher/data/sampler.h"
#include "proto/config.pb.h"

namespace tessera {

struct DataSources {
  // The training datasets: one (data.train_prefix) or those of data.train_blend, in its order.
  std::vector<std::unique_ptr<IndexedDataset>> train_data;
  std::unique_ptr<IndexedDataset> valid_data;
  // With data.loss_mask: the masks of train_data (in its order) and of valid_data.
  std::vector<std::unique_ptr<IndexedDataset>> train_masks;
  std::unique_ptr<IndexedDataset> valid_mask;
  std::unique_ptr<Sampler> train;
  std::unique_ptr<Sampler> valid;     // null without a validation set
  std::string description;            // one line for the log
  uint64_t tokenizer_xxh64 = 0;       // of data.tokenizer's file, 0 when data.tokenizer is unset
  std::vector<std::string> warnings;  // for the log, once (e.g. truncated conversations)
};

// Opens and checks the datasets (every token id < model.vocab_size) and data.tokenizer (a SentencePiece model
// whose vocabulary fits the model). With data.loss_mask, each dataset PREFIX is read with its mask PREFIX_mask
// through SftSampler, padded with data.tokenizer's EOS id (2, the id `tessera prepare` tokenizers use, without
// one). Throws DataError naming the file.
DataSources open_data_sources(const config::JobConfig& job);

}  // namespace tessera

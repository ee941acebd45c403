// One conversation per sample, padded, with its loss mask.
#include "launcher/data/sft_sampler.h"

#include <algorithm>
#include <vector>

#include "core/check.h"

namespace tessera {

std::string loss_mask_prefix(const std::string& prefix) { return prefix + "_mask"; }

SftSampler::SftSampler(const IndexedDataset& tokens, const IndexedDataset& mask, int seq_len, uint64_t seed,
                       int32_t pad_id, bool shuffle)
    : tokens_(tokens),
      mask_(mask),
      seq_len_(seq_len),
      pad_id_(pad_id),
      shuffle_(shuffle),
      permutations_(seed, tokens.num_documents()) {
  TS_CHECK(seq_len >= 1, ConfigError, "sequence length must be at least 1, got ", seq_len);
  TS_CHECK(tokens.num_documents() > 0, DataError, tokens.bin_path(), " holds no documents");
  TS_CHECK(mask.num_documents() == tokens.num_documents(), DataError, mask.bin_path(), " holds ", mask.num_documents(),
           " documents, but its tokens ", tokens.bin_path(), " hold ", tokens.num_documents(),
           "; write both with `tessera prepare --format sft`");
  std::vector<int32_t> values;
  for (int64_t d = 0; d < tokens.num_documents(); ++d) {
    const int64_t length = tokens.document_length(d);
    TS_CHECK(mask.document_length(d) == length, DataError, mask.bin_path(), ": document ", d, " has ",
             mask.document_length(d), " mask values for ", length, " tokens; write both with `tessera prepare ",
             "--format sft`");
    if (length > static_cast<int64_t>(seq_len) + 1) ++truncated_;
  }
  values.resize(static_cast<size_t>(std::min<int64_t>(mask.num_tokens(), 1 << 20)));
  for (int64_t start = 0; start < mask.num_tokens(); start += static_cast<int64_t>(values.size())) {
    const int64_t count = std::min<int64_t>(static_cast<int64_t>(values.size()), mask.num_tokens() - start);
    mask.read_tokens(start, count, values.data());
    for (int64_t i = 0; i < count; ++i) {
      TS_CHECK(values[static_cast<size_t>(i)] == 0 || values[static_cast<size_t>(i)] == 1, DataError, mask.bin_path(),
               ": mask value ", values[static_cast<size_t>(i)], " at position ", start + i, " is not 0 or 1");
    }
  }
}

int64_t SftSampler::document(int64_t global_index) const {
  TS_ASSERT(global_index >= 0, "negative sample index ", global_index);
  const int64_t documents = tokens_.num_documents();
  if (!shuffle_) return global_index % documents;
  return permutations_.at(global_index / documents, global_index % documents);
}

void SftSampler::get(int64_t global_index, int32_t* inputs, int32_t* targets) const {
  const int64_t d = document(global_index);
  const int64_t n = std::min<int64_t>(tokens_.document_length(d), static_cast<int64_t>(seq_len_) + 1);
  const int64_t start = tokens_.document_offset(d);
  // Positions 0 .. seq_len of the sample: the document's first n tokens, then padding.
  auto token = [&](int64_t i, int32_t* out) {
    if (i < n) {
      tokens_.read_tokens(start + i, 1, out);
    } else {
      *out = pad_id_;
    }
  };
  const int64_t in_inputs = std::min<int64_t>(n, seq_len_);
  if (in_inputs > 0) tokens_.read_tokens(start, in_inputs, inputs);
  std::fill(inputs + in_inputs, inputs + seq_len_, pad_id_);
  std::copy(inputs + 1, inputs + seq_len_, targets);
  token(seq_len_, targets + seq_len_ - 1);
}

void SftSampler::get_loss_mask(int64_t global_index, uint8_t* mask) const {
  const int64_t d = document(global_index);
  const int64_t n = std::min<int64_t>(mask_.document_length(d), static_cast<int64_t>(seq_len_) + 1);
  // Target i is token i + 1 of the sample.
  std::vector<int32_t> values(static_cast<size_t>(std::max<int64_t>(n - 1, 0)));
  if (n > 1) mask_.read_tokens(mask_.document_offset(d) + 1, n - 1, values.data());
  for (int i = 0; i < seq_len_; ++i) mask[i] = i < n - 1 ? static_cast<uint8_t>(values[static_cast<size_t>(i)]) : 0;
}

}  // namespace tessera

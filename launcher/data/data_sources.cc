// Opening a job's data.
#include "launcher/data/data_sources.h"

#include "core/check.h"
#include "launcher/data/sft_sampler.h"
#include "launcher/data/splitmix64.h"
#include "launcher/data/tokenizer.h"
#include "launcher/data/tokenizer_file.h"

namespace tessera {

DataSources open_data_sources(const config::JobConfig& job) {
  DataSources d;
  const int seq_len = job.train().seq_len();
  const uint64_t seed = job.train().seed();
  const int vocab = job.model().vocab_size();
  if (!job.data().tokenizer().empty()) {
    d.tokenizer_xxh64 = check_tokenizer_file(job.data().tokenizer(), vocab, "data.tokenizer").xxh64;
  }
  if (job.data().mock()) {
    d.train = std::make_unique<MockSampler>(vocab, seq_len, seed);
    // Held-out mock data: the same generator, another seed.
    d.valid = std::make_unique<MockSampler>(vocab, seq_len, seed + 0x5eed);
    d.description = "generated tokens (data.mock)";
    return d;
  }
  auto open = [&](const std::string& prefix) {
    auto data = std::make_unique<IndexedDataset>(IndexedDataset::open(prefix));
    data->check_vocab(vocab);
    return data;
  };
  // With data.loss_mask, a dataset's sampler reads conversations and their masks (Note [Masked loss]).
  const bool masked = job.data().loss_mask();
  int32_t pad_id = 2;
  if (masked && !job.data().tokenizer().empty()) {
    const int eos = Tokenizer(job.data().tokenizer(), "data.tokenizer").eos_id();
    if (eos >= 0) pad_id = eos;
  }
  auto sampler = [&](const IndexedDataset& data, std::vector<std::unique_ptr<IndexedDataset>>& masks,
                     uint64_t sampler_seed) -> std::unique_ptr<Sampler> {
    if (!masked) return std::make_unique<GptSampler>(data, seq_len, sampler_seed);
    masks.push_back(std::make_unique<IndexedDataset>(IndexedDataset::open(loss_mask_prefix(data.prefix()))));
    auto sft = std::make_unique<SftSampler>(data, *masks.back(), seq_len, sampler_seed, pad_id);
    if (sft->truncated_documents() > 0) {
      d.warnings.push_back(str_cat(data.prefix(), ": ", sft->truncated_documents(), " of ", data.num_documents(),
                                   " conversations are longer than train.seq_len + 1 = ", seq_len + 1,
                                   " tokens and are truncated; raise train.seq_len to keep them whole"));
    }
    return sft;
  };
  if (job.data().train_blend_size() == 0) {
    d.train_data.push_back(open(job.data().train_prefix()));
    d.train = sampler(*d.train_data.front(), d.train_masks, seed);
    d.description = str_cat(job.data().train_prefix(), " (", d.train_data.front()->num_documents(), " documents, ",
                            d.train_data.front()->num_tokens(), " tokens", masked ? ", with its loss mask" : "", ")");
  } else {
    // Each dataset of the blend gets its own sample order, from (seed, its position in the blend).
    std::vector<std::unique_ptr<Sampler>> samplers;
    std::vector<double> weights;
    std::vector<std::string> names;
    d.description = "blend of";
    for (int i = 0; i < job.data().train_blend_size(); ++i) {
      const config::BlendSource& source = job.data().train_blend(i);
      d.train_data.push_back(open(source.prefix()));
      samplers.push_back(sampler(*d.train_data.back(), d.train_masks, hash_pair(seed, static_cast<uint64_t>(i))));
      weights.push_back(source.weight());
      names.push_back(source.prefix());
      d.description += str_cat(i == 0 ? " " : ", ", source.prefix(), " x ", source.weight(), " (",
                               d.train_data.back()->num_tokens(), " tokens)");
    }
    d.train = std::make_unique<BlendedSampler>(std::move(samplers), std::move(weights), std::move(names));
  }
  if (job.data().has_valid_prefix()) {
    d.valid_data = open(job.data().valid_prefix());
    std::vector<std::unique_ptr<IndexedDataset>> valid_masks;
    d.valid = sampler(*d.valid_data, valid_masks, seed);
    if (!valid_masks.empty()) d.valid_mask = std::move(valid_masks.front());
    d.description += str_cat(", validation ", job.data().valid_prefix(), " (", d.valid_data->num_tokens(), " tokens)");
  }
  return d;
}

}  // namespace tessera

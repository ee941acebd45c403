// Opening a job's data.
#include "launcher/data/data_sources.h"

#include "core/check.h"
#include "launcher/data/splitmix64.h"
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
  if (job.data().train_blend_size() == 0) {
    d.train_data.push_back(open(job.data().train_prefix()));
    d.train = std::make_unique<GptSampler>(*d.train_data.front(), seq_len, seed);
    d.description = str_cat(job.data().train_prefix(), " (", d.train_data.front()->num_documents(), " documents, ",
                            d.train_data.front()->num_tokens(), " tokens)");
  } else {
    // Each dataset of the blend gets its own sample order, from (seed, its position in the blend).
    std::vector<std::unique_ptr<Sampler>> samplers;
    std::vector<double> weights;
    std::vector<std::string> names;
    d.description = "blend of";
    for (int i = 0; i < job.data().train_blend_size(); ++i) {
      const config::BlendSource& source = job.data().train_blend(i);
      d.train_data.push_back(open(source.prefix()));
      samplers.push_back(
          std::make_unique<GptSampler>(*d.train_data.back(), seq_len, hash_pair(seed, static_cast<uint64_t>(i))));
      weights.push_back(source.weight());
      names.push_back(source.prefix());
      d.description += str_cat(i == 0 ? " " : ", ", source.prefix(), " x ", source.weight(), " (",
                               d.train_data.back()->num_tokens(), " tokens)");
    }
    d.train = std::make_unique<BlendedSampler>(std::move(samplers), std::move(weights), std::move(names));
  }
  if (job.data().has_valid_prefix()) {
    d.valid_data = open(job.data().valid_prefix());
    d.valid = std::make_unique<GptSampler>(*d.valid_data, seq_len, seed);
    d.description += str_cat(", validation ", job.data().valid_prefix(), " (", d.valid_data->num_tokens(), " tokens)");
  }
  return d;
}

}  // namespace tessera

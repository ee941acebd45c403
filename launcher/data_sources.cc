// Opening a job's data.
#include "launcher/data_sources.h"

#include "core/check.h"

namespace tessera {

DataSources open_data_sources(const config::JobConfig& job) {
  DataSources d;
  const int seq_len = job.train().seq_len();
  const uint64_t seed = job.train().seed();
  const int vocab = job.model().vocab_size();
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
  d.train_data = open(job.data().train_prefix());
  d.train = std::make_unique<GptSampler>(*d.train_data, seq_len, seed);
  d.description = str_cat(job.data().train_prefix(), " (", d.train_data->num_documents(), " documents, ",
                          d.train_data->num_tokens(), " tokens)");
  if (job.data().has_valid_prefix()) {
    d.valid_data = open(job.data().valid_prefix());
    d.valid = std::make_unique<GptSampler>(*d.valid_data, seq_len, seed);
    d.description += str_cat(", validation ", job.data().valid_prefix(), " (", d.valid_data->num_tokens(), " tokens)");
  }
  return d;
}

}  // namespace tessera

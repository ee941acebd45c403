// SampleSource: where training sequences come from, addressed by global sample index (DESIGN invariant 3).
#pragma once

#include <cstdint>

namespace tessera {

class SampleSource {
 public:
  virtual ~SampleSource() = default;
  // Fills seq_len input tokens and their next-token targets for global sample `index`. Deterministic:
  // every rank asking for the same index gets the same tokens. Thread-safe.
  virtual void get(int64_t index, int32_t* inputs, int32_t* targets) const = 0;
};

// Adapts any type with a matching get() (GptSampler, MockSampler) to SampleSource.
template <typename Sampler>
class SamplerSource final : public SampleSource {
 public:
  explicit SamplerSource(const Sampler& sampler) : sampler_(sampler) {}
  void get(int64_t index, int32_t* inputs, int32_t* targets) const override { sampler_.get(index, inputs, targets); }

 private:
  const Sampler& sampler_;
};

}  // namespace tessera

// Generating tokens from a prompt with a model built for inference: a prefill of the whole prompt through the
// pipeline (PipelineDecoder), then one token per step attending over the cached keys and values, each token
// chosen on the last stage (token_sampler.h) from the logits gathered over tp and broadcast to the other stages.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "launcher/run/token_sampler.h"
#include "parallel/pipeline_decoder.h"

namespace tessera {

struct GenerateOptions {
  int max_new_tokens = 64;
  SamplingOptions sampling;
  int eos_id = -1;  // generation stops after this token (it is part of the output); -1: only the limit
  // Only ids below this are chosen (the tokenizer's vocabulary, when the model's is larger); 0: the model's.
  int64_t vocab_limit = 0;
  bool kv_cache = true;  // false: recompute the whole sequence with the full forward at every step (tests)
};

struct GenerateStats {
  int64_t prompt_tokens = 0, new_tokens = 0;
  double prefill_s = 0, decode_s = 0;  // the first token's step, and the others'
};

// The new tokens generated after `prompt` (1 <= size, size + max_new_tokens <= model.seq_len()) for sequence
// number `sequence` (which seeds its draws). on_token(id) runs on every rank for every new token as it is
// chosen. The model must hold one sequence (micro_batch 1). Collective over the model's tp and pp groups.
std::vector<int32_t> generate(PipelineDecoder& decoder, const Model& model, const std::vector<int32_t>& prompt,
                              const GenerateOptions& options, uint64_t sequence,
                              const std::function<void(int32_t)>& on_token, GenerateStats* stats = nullptr);

}  // namespace tessera

// Choosing the next token from a row of logits: greedy (temperature 0) or sampling at a temperature from the
// top-k and top-p (nucleus) candidates. Pure and deterministic: the random number of a draw is a function of
// (seed, sequence, step) only, so every rank, every layout and every rerun that sees the same logits draws the
// same token.
#pragma once

#include <cstdint>

namespace tessera {

struct SamplingOptions {
  float temperature = 1;  // 0: greedy (the first largest logit)
  int top_k = 0;          // keep the k most likely tokens; 0 keeps all
  float top_p = 1;        // keep the most likely tokens whose probabilities first sum to at least top_p; 1 keeps all
  uint64_t seed = 0;
};

// The token chosen from logits[0, vocab) for step `step` of sequence `sequence`. Requires vocab >= 1,
// temperature >= 0, top_k >= 0 and 0 < top_p <= 1. Candidates tie-break by lower id.
int32_t pick_token(const float* logits, int64_t vocab, const SamplingOptions& options, uint64_t sequence,
                   uint64_t step);

}  // namespace tessera

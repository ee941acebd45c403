// Greedy choice and top-k/top-p sampling, in double.
#include "launcher/run/token_sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/check.h"
#include "launcher/data/splitmix64.h"

namespace tessera {

int32_t pick_token(const float* logits, int64_t vocab, const SamplingOptions& options, uint64_t sequence,
                   uint64_t step) {
  TS_ASSERT(vocab >= 1 && options.temperature >= 0 && options.top_k >= 0 && options.top_p > 0 && options.top_p <= 1,
            "sampling options");
  if (options.temperature == 0) {
    return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);  // the first maximum
  }
  // Candidates by decreasing logit, ties by id.
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  int64_t keep = options.top_k > 0 ? std::min<int64_t>(options.top_k, vocab) : vocab;
  const double top = logits[order[0]];
  std::vector<double> weight(static_cast<size_t>(keep));
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) {
    weight[i] = std::exp((static_cast<double>(logits[order[i]]) - top) / options.temperature);
    total += weight[i];
  }
  if (options.top_p < 1) {
    double mass = 0;
    for (int64_t i = 0; i < keep; ++i) {
      mass += weight[i] / total;
      if (mass >= options.top_p) {
        keep = i + 1;
        break;
      }
    }
    total = 0;
    for (int64_t i = 0; i < keep; ++i) total += weight[i];
  }
  // A uniform draw in [0, 1) from 53 random bits of (seed, sequence, step).
  const uint64_t bits = splitmix64_mix(hash_pair(hash_pair(options.seed, sequence), step));
  const double u = static_cast<double>(bits >> 11) * 0x1.0p-53 * total;
  double cumulative = 0;
  for (int64_t i = 0; i < keep; ++i) {
    cumulative += weight[i];
    if (u < cumulative) return order[i];
  }
  return order[keep - 1];
}

}  // namespace tessera

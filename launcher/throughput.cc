// Model FLOPs per token and MFU.
#include "launcher/throughput.h"

#include <cstdio>

namespace tessera {

double model_flops_per_token(const ModelConfig& model, int64_t seq_len) {
  const double C = model.n_embd;
  const double embedding_params =
      static_cast<double>(model.vocab_size) * C + static_cast<double>(model.max_seq_len) * C;
  const double matmul_params = static_cast<double>(model.num_parameters()) - embedding_params +
                               static_cast<double>(model.vocab_size) * C;  // + the tied head
  return 6.0 * matmul_params + 12.0 * model.n_layer * C * static_cast<double>(seq_len);
}

Throughput throughput(const ModelConfig& model, int64_t seq_len, double tokens, double seconds, int devices,
                      double peak_tflops) {
  Throughput t;
  if (seconds <= 0 || devices <= 0) return t;
  t.tokens_per_s = tokens / seconds;
  t.tflops_per_device = model_flops_per_token(model, seq_len) * t.tokens_per_s / devices / 1e12;
  if (peak_tflops > 0) t.mfu = t.tflops_per_device / peak_tflops;
  return t;
}

std::string format_throughput(const Throughput& t) {
  char text[64];
  if (t.mfu >= 0) {
    std::snprintf(text, sizeof(text), "MFU %.1f%%", 100 * t.mfu);
  } else {
    std::snprintf(text, sizeof(text), "%.3g TFLOP/s/rank", t.tflops_per_device);
  }
  return text;
}

}  // namespace tessera

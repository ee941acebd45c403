// Model FLOPs per token and MFU.
#include "launcher/run/throughput.h"

#include <fmt/format.h>

#include "models/registry.h"

namespace tessera {

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
  if (t.mfu >= 0) return fmt::format("MFU {:.1f}%", 100 * t.mfu);
  return fmt::format("{:.3g} TFLOP/s/rank", t.tflops_per_device);
}

}  // namespace tessera

// Model FLOPs per token and MFU.
#include "launcher/run/throughput.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

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

double measure_sgemm_gflops(Backend& backend, int reps) {
  using Clock = std::chrono::steady_clock;
  const int64_t N = 1024, C = 768, OC = 3072;
  Buffer buffer = backend.allocate(static_cast<size_t>(N * C + OC * C + N * OC) * sizeof(float));
  Tensor inp = buffer.tensor(0, DType::kF32, {N, C});
  Tensor w = buffer.tensor(N * C * sizeof(float), DType::kF32, {OC, C});
  Tensor out = buffer.tensor((N * C + OC * C) * sizeof(float), DType::kF32, {N, OC});
  backend.fill(inp, 0.5f);
  backend.fill(w, 0.25f);
  backend.matmul_forward(out, inp, w, Tensor());
  double best = 0;
  for (int rep = 0; rep < reps; ++rep) {
    const auto start = Clock::now();
    for (int i = 0; i < 4; ++i) backend.matmul_forward(out, inp, w, Tensor());
    backend.synchronize();
    const double s = std::chrono::duration<double>(Clock::now() - start).count();
    best = std::max(best, 4 * 2.0 * N * C * OC / s / 1e9);
  }
  return best;
}

}  // namespace tessera

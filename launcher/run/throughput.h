// Model FLOPs and MFU, for the per-step log of `tessera train` and for `tessera bench`.
//
// Model FLOPs per token are the usual dense-transformer count (forward + backward = 3 x forward, full attention
// square, no recomputation counted):
//   6 * (matmul parameters: every block's weights + the tied head) + 12 * n_layer * n_embd * seq_len
// MFU is the achieved model FLOP/s of one device over that device's dense bf16 peak (kernels/cuda/device.h). It
// exists only where the peak is known: a CPU or a GPU missing from the table reports TFLOP/s and no MFU.
#pragma once

#include <cstdint>
#include <string>

#include "core/backend.h"
#include "core/model_config.h"

namespace tessera {

struct Throughput {
  double tokens_per_s = 0;
  double tflops_per_device = 0;  // model TFLOP/s of one rank
  double mfu = -1;               // fraction of the device's bf16 peak; < 0: peak unknown
};

// The throughput of a step of `tokens` tokens that took `seconds` on `devices` ranks, each with a dense bf16 peak
// of peak_tflops (0: unknown).
Throughput throughput(const ModelConfig& model, int64_t seq_len, double tokens, double seconds, int devices,
                      double peak_tflops);

// "MFU 41.3%" or "12.3 TFLOP/s/GPU" when the peak is unknown; for the human log line.
std::string format_throughput(const Throughput& t);

// GFLOP/s of backend's matmul at a GPT-2-like shape (inp [1024, 768] x W[3072, 768]^T), the best of `reps`
// timings of 4 products each: what `tessera bench` relates model FLOP/s to and `tessera plan --gpu cpu` plans with.
double measure_sgemm_gflops(Backend& backend, int reps = 5);

}  // namespace tessera

// Reference fixtures (format tessera-fixture-v1): what PyTorch computed when training a small model for a
// few steps — initial weights, batches, hyper-parameters, per-step loss and gradient norm, final weights.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "proto/config.pb.h"

namespace tessera {

struct Fixture {
  std::string path;
  std::string arch;
  int vocab_size = 0, n_layer = 0, n_head = 0, n_embd = 0, seq_len = 0, batch_size = 0, steps = 0;
  double lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0, grad_clip = 0, norm_eps = 0;
  // llama only
  int n_kv_head = 0, ffn_hidden = 0;
  double rope_theta = 0;
  bool tied_embeddings = true;
  std::vector<std::string> param_names;
  std::vector<int32_t> inputs, targets;  // [steps, batch_size, seq_len]
  std::vector<double> expected_loss, expected_grad_norm;
  std::map<std::string, std::vector<float>> init, final_weights;
  std::map<std::string, std::vector<int64_t>> shapes;
};

// Reads and checks a fixture. Throws DataError naming the file and what is missing or unsupported.
Fixture load_fixture(const std::string& path);

// The job that reproduces the fixture: its model shape, batch, optimizer (constant lr, no warm-up), mock data
// off; the caller applies user overrides (layout, threads) on top.
config::JobConfig fixture_job_config(const Fixture& fixture);

}  // namespace tessera

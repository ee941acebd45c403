// GPT-2 parameter specs and shard layouts.
#include "core/param_spec.h"

#include <cmath>

#include "core/check.h"

namespace tessera {

int64_t ParamSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t ModelConfig::num_parameters() const {
  int64_t total = 0;
  for (const ParamSpec& spec : gpt2_param_specs(*this)) total += spec.numel();
  return total;
}

std::vector<ParamSpec> gpt2_param_specs(const ModelConfig& config) {
  const int64_t C = config.n_embd, V = config.vocab_size, T = config.max_seq_len;
  const float std_dev = config.init_std;
  // Output projections feed the residual stream once per block half: scaled down as in GPT-2.
  const float residual_std = config.init_std / std::sqrt(2.0f * config.n_layer);
  std::vector<ParamSpec> specs;
  auto matrix = [&](std::string name, std::vector<int64_t> shape, int layer, float s, int split_dim, int parts) {
    ParamSpec spec;
    spec.name = std::move(name);
    spec.shape = std::move(shape);
    spec.layer = layer;
    spec.weight_decay = true;
    spec.init = InitKind::kNormal;
    spec.init_std = s;
    spec.tp_split_dim = split_dim;
    spec.tp_split_parts = parts;
    specs.push_back(spec);
  };
  auto vector = [&](std::string name, int64_t n, int layer, InitKind init, int split_dim, int parts) {
    ParamSpec spec;
    spec.name = std::move(name);
    spec.shape = {n};
    spec.layer = layer;
    spec.init = init;
    spec.tp_split_dim = split_dim;
    spec.tp_split_parts = parts;
    specs.push_back(spec);
  };
  matrix("wte", {V, C}, -1, std_dev, 0, 1);
  specs.back().vocab_parallel = true;
  matrix("wpe", {T, C}, -1, std_dev, -1, 1);
  for (int l = 0; l < config.n_layer; ++l) {
    std::string h = "h." + std::to_string(l) + ".";
    vector(h + "ln1.weight", C, l, InitKind::kOnes, -1, 1);
    vector(h + "ln1.bias", C, l, InitKind::kZeros, -1, 1);
    // Column-parallel by heads: Y = X A^T, A = [A_1; ...; A_tp] by rows within each of Q, K, V.
    matrix(h + "attn.qkv.weight", {3 * C, C}, l, std_dev, 0, 3);
    vector(h + "attn.qkv.bias", 3 * C, l, InitKind::kZeros, 0, 3);
    // Row-parallel: Y = sum_r X_r A_r^T with A split by columns (input features); bias replicated.
    matrix(h + "attn.proj.weight", {C, C}, l, residual_std, 1, 1);
    vector(h + "attn.proj.bias", C, l, InitKind::kZeros, -1, 1);
    vector(h + "ln2.weight", C, l, InitKind::kOnes, -1, 1);
    vector(h + "ln2.bias", C, l, InitKind::kZeros, -1, 1);
    matrix(h + "mlp.fc.weight", {4 * C, C}, l, std_dev, 0, 1);
    vector(h + "mlp.fc.bias", 4 * C, l, InitKind::kZeros, 0, 1);
    matrix(h + "mlp.proj.weight", {C, 4 * C}, l, residual_std, 1, 1);
    vector(h + "mlp.proj.bias", C, l, InitKind::kZeros, -1, 1);
  }
  vector("lnf.weight", C, -1, InitKind::kOnes, -1, 1);
  vector("lnf.bias", C, -1, InitKind::kZeros, -1, 1);
  return specs;
}

ShardLayout shard_layout(const ParamSpec& spec, const ModelConfig& config, int tp_rank, int tp_size) {
  ShardLayout layout;
  layout.local_shape = spec.shape;
  if (spec.tp_split_dim < 0) return layout;
  const int d = spec.tp_split_dim;
  layout.split_dim = d;
  if (spec.vocab_parallel) {
    const int64_t rows = config.padded_vocab(tp_size) / tp_size;
    layout.local_shape[d] = rows;
    for (int64_t i = 0; i < rows; ++i) {
      int64_t g = tp_rank * rows + i;
      layout.global_index_of_local.push_back(g < spec.shape[d] ? g : -1);
    }
    return layout;
  }
  const int64_t D = spec.shape[d];
  const int64_t P = spec.tp_split_parts;
  TS_ASSERT(D % (P * tp_size) == 0, spec.name, " dim ", d, " (", D, ") not divisible by ", P, "*tp=", P * tp_size);
  const int64_t part = D / P, chunk = part / tp_size;
  layout.local_shape[d] = P * chunk;
  for (int64_t p = 0; p < P; ++p) {
    for (int64_t i = 0; i < chunk; ++i) layout.global_index_of_local.push_back(p * part + tp_rank * chunk + i);
  }
  return layout;
}

}  // namespace tessera

namespace tessera {

namespace {

// Calls fn(local_flat_index, global_flat_index) for every non-padding element of the shard.
template <typename Fn>
void for_each_element(const ParamSpec& spec, const ShardLayout& layout, Fn fn) {
  const int64_t rows = layout.local_shape[0];
  const int64_t cols = layout.local_shape.size() == 2 ? layout.local_shape[1] : 1;
  const int64_t global_cols = spec.shape.size() == 2 ? spec.shape[1] : 1;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t gr = layout.split_dim == 0 ? layout.global_index_of_local[r] : r;
    if (gr < 0) continue;
    for (int64_t c = 0; c < cols; ++c) {
      int64_t gc = layout.split_dim == 1 ? layout.global_index_of_local[c] : c;
      fn(r * cols + c, gr * global_cols + gc);
    }
  }
}

int64_t local_numel(const ShardLayout& layout) {
  int64_t n = 1;
  for (int64_t d : layout.local_shape) n *= d;
  return n;
}

}  // namespace

void slice_global_to_local(const ParamSpec& spec, const ShardLayout& layout, const float* global, float* local) {
  for (int64_t i = 0, n = local_numel(layout); i < n; ++i) local[i] = 0.0f;
  for_each_element(spec, layout, [&](int64_t l, int64_t g) { local[l] = global[g]; });
}

void scatter_local_to_global(const ParamSpec& spec, const ShardLayout& layout, const float* local, float* global) {
  for_each_element(spec, layout, [&](int64_t l, int64_t g) { global[g] = local[l]; });
}

}  // namespace tessera

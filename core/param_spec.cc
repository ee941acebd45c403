// Parameter specs and shard layouts.
#include "core/param_spec.h"

#include <cmath>

#include "core/check.h"

namespace tessera {

int64_t ParamSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<int64_t> shard_local_shape(const ParamSpec& spec, const ModelConfig& config, int tp_size) {
  std::vector<int64_t> shape = spec.shape;
  if (spec.tp_split_dim < 0) return shape;
  const int d = spec.tp_split_dim;
  if (spec.vocab_parallel) {
    shape[d] = config.padded_vocab(tp_size) / tp_size;
    return shape;
  }
  const int64_t D = spec.shape[d];
  const int64_t P = spec.tp_split_parts;
  TS_ASSERT(D % (P * tp_size) == 0, spec.name, " dim ", d, " (", D, ") not divisible by ", P, "*tp=", P * tp_size);
  shape[d] = D / tp_size;
  return shape;
}

ShardLayout shard_layout(const ParamSpec& spec, const ModelConfig& config, int tp_rank, int tp_size) {
  ShardLayout layout;
  layout.local_shape = shard_local_shape(spec, config, tp_size);
  if (spec.tp_split_dim < 0) return layout;
  const int d = spec.tp_split_dim;
  layout.split_dim = d;
  if (spec.vocab_parallel) {
    const int64_t rows = layout.local_shape[d];
    for (int64_t i = 0; i < rows; ++i) {
      int64_t g = tp_rank * rows + i;
      layout.global_index_of_local.push_back(g < spec.shape[d] ? g : -1);
    }
    return layout;
  }
  const int64_t P = spec.tp_split_parts;
  const int64_t part = spec.shape[d] / P, chunk = part / tp_size;
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

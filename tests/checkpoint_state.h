// Test helpers for checkpoints without a model or MPI: one TP rank's parameter shards (LocalParams over host
// vectors, laid out like Gpt2Model's flat buffer) with weights and moments that are closed-form functions of
// (kind, global name, global index), so any layout knows exactly what every local element must hold.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "core/model_config.h"
#include "core/param_spec.h"
#include "launcher/checkpoints/checkpoint_layout.h"
#include "launcher/data/splitmix64.h"
#include "models/gpt2/gpt2_model.h"

namespace tessera::testing {

// The tiny model of the checkpoint tests: vocab 63 (odd, so TP pads it), 2 layers, 4 heads, C 16.
inline ModelConfig tiny_model() {
  ModelConfig c;
  c.vocab_size = 63;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_embd = 16;
  c.max_seq_len = 16;
  return c;
}

// The value element g of global tensor `name` of `kind` holds: distinct, exactly representable, never zero.
inline float expected_value(StateKind kind, const std::string& name, int64_t g) {
  uint64_t h = static_cast<uint64_t>(kind) * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(g);
  for (char c : name) h = h * 131 + static_cast<unsigned char>(c);
  return 1.0f + static_cast<float>(splitmix64_mix(h) >> 44) / 1024.0f;  // 1 + k/1024, k < 2^20
}

inline int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// A TP rank's whole state: LocalParams viewing `values`, and moments `exp_avg`/`exp_avg_sq` of the same layout.
struct ShardState {
  std::vector<LocalParam> params;
  std::vector<float> values, exp_avg, exp_avg_sq;

  ShardState(const ShardState&) = delete;
  ShardState& operator=(const ShardState&) = delete;

  // Every element set to `fill` (e.g. NaN to see what a load leaves untouched).
  ShardState(const ModelConfig& config, int tp_rank, int tp_size, float fill) {
    int64_t total = 0;
    for (const ParamSpec& spec : gpt2_param_specs(config)) {
      LocalParam p;
      p.spec = spec;
      p.layout = shard_layout(spec, config, tp_rank, tp_size);
      p.offset = total;
      p.counted = spec.tp_split_dim >= 0 || tp_rank == 0;
      total += numel_of(p.layout.local_shape);
      params.push_back(std::move(p));
    }
    values.assign(total, fill);
    exp_avg.assign(total, fill);
    exp_avg_sq.assign(total, fill);
    for (LocalParam& p : params) {
      const std::vector<int64_t>& s = p.layout.local_shape;
      p.value = s.size() == 1 ? Tensor(values.data() + p.offset, DType::kF32, Device::kCpu, {s[0]})
                              : Tensor(values.data() + p.offset, DType::kF32, Device::kCpu, {s[0], s[1]});
    }
  }

  std::vector<float>& of(StateKind kind) {
    return kind == StateKind::kModel ? values : kind == StateKind::kExpAvg ? exp_avg : exp_avg_sq;
  }

  // What every local element must hold: expected_value through the TP map, zero in vocabulary padding.
  std::vector<float> expected(StateKind kind) const {
    std::vector<float> out(values.size(), 0.0f);
    for (const LocalParam& p : params) {
      std::vector<float> global(static_cast<size_t>(p.spec.numel()));
      for (int64_t g = 0; g < p.spec.numel(); ++g) global[g] = expected_value(kind, p.spec.name, g);
      slice_global_to_local(p.spec, p.layout, global.data(), out.data() + p.offset);
    }
    return out;
  }

  // Fills every kind with its expected values (in place: the LocalParams view these vectors).
  void fill_expected() {
    for (StateKind kind : kStateKinds) {
      const std::vector<float> want = expected(kind);
      std::copy(want.begin(), want.end(), of(kind).begin());
    }
  }

  // The optimizer-state view of the elements [begin, end) of the flat buffer (all of it by default).
  OptimizerStateView optimizer_view(int64_t begin = 0, int64_t end = -1) {
    if (end < 0) end = static_cast<int64_t>(values.size());
    OptimizerStateView view;
    view.exp_avg = Tensor(exp_avg.data() + begin, DType::kF32, Device::kCpu, {end - begin});
    view.exp_avg_sq = Tensor(exp_avg_sq.data() + begin, DType::kF32, Device::kCpu, {end - begin});
    view.ranges = {{begin, 0, end - begin}};
    return view;
  }
};

}  // namespace tessera::testing

// ZeRO-1 AdamW over a data-parallel shard of the parameters.
#include "parallel/zero_optimizer.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "core/check.h"

namespace tessera {

namespace {

Tensor slice(Tensor flat, int64_t begin, int64_t n) {
  return Tensor(flat.f32() + begin, DType::kF32, flat.device(), {n});
}

}  // namespace

ZeroAdamW::ZeroAdamW(Model& model, Backend& backend, DpGradSync& sync, AdamWConfig config,
                     std::vector<ProcessGroup*> norm_groups)
    : model_(model), backend_(backend), sync_(sync), config_(config) {
  TS_ASSERT(sync.mode() == DpGradSync::Mode::kReduceScatter || sync.mode() == DpGradSync::Mode::kShardedGradients,
            "ZeRO needs a reduce-scatter gradient sync");
  norm_groups_.push_back(&sync.dp());
  for (ProcessGroup* group : norm_groups) norm_groups_.push_back(group);
  const int64_t n = sync.shard().numel();
  const size_t bytes = static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float);
  m_buffer_ = backend.allocate(bytes);
  v_buffer_ = backend.allocate(bytes);
  m_ = m_buffer_.tensor(0, DType::kF32, {n});
  v_ = v_buffer_.tensor(0, DType::kF32, {n});
  backend.fill(m_, 0.0f);
  backend.fill(v_, 0.0f);
}

std::vector<OptimizerStateRange> ZeroAdamW::state_ranges() const {
  std::vector<OptimizerStateRange> ranges;
  for (const ShardSegment& s : sync_.shard_segments()) ranges.push_back({s.flat_begin, s.shard_begin, s.size});
  return ranges;
}

double ZeroAdamW::grad_norm() {
  const std::vector<LocalParam>& params = model_.params();
  const Tensor shard = sync_.shard();
  std::vector<Tensor> counted;
  for (const ShardSegment& s : sync_.shard_segments()) {
    if (params[s.param].counted) counted.push_back(slice(shard, s.shard_begin, s.size));
  }
  std::vector<double> sums(counted.size());
  backend_.sum_of_squares_many(counted.data(), static_cast<int>(counted.size()), sums.data());
  double local = 0;
  for (double s : sums) local += s;
  return std::sqrt(sum_over_groups(local, norm_groups_));
}

void ZeroAdamW::step(double lr, double grad_scale) {
  ++steps_;
  const std::vector<LocalParam>& params = model_.params();
  const Tensor flat = model_.flat_params(), shard = sync_.shard();
  for (const ShardSegment& s : sync_.shard_segments()) {
    AdamWStep a;
    a.lr = static_cast<float>(lr);
    a.beta1 = static_cast<float>(config_.beta1);
    a.beta2 = static_cast<float>(config_.beta2);
    a.eps = static_cast<float>(config_.eps);
    a.weight_decay = params[s.param].spec.weight_decay ? static_cast<float>(config_.weight_decay) : 0.0f;
    a.step = steps_;
    a.grad_scale = static_cast<float>(grad_scale);
    backend_.adamw_update(slice(flat, s.flat_begin, s.size), slice(shard, s.shard_begin, s.size),
                          slice(m_, s.shard_begin, s.size), slice(v_, s.shard_begin, s.size), a, Tensor());
  }
  // The summed gradients in the shard are spent: the shard now carries the updated parameters to the other
  // DP ranks. Padding (bucket elements past the end of a bucket) is sent as zeros.
  backend_.fill(shard, 0.0f);
  for (const ShardSegment& s : sync_.shard_segments()) {
    backend_.copy(slice(shard, s.shard_begin, s.size), slice(flat, s.flat_begin, s.size));
  }
  sync_.gather_params();
  // The gathered master weights, rounded once into the compute copies (bf16 compute only).
  model_.refresh_compute_params();
}

}  // namespace tessera

// ZeroAdamW: ZeRO stages 1 and 2 — AdamW whose state (the moments m and v) is sharded across the
// data-parallel ranks. Stage 2 differs only in how the gradient sync fills the shard (Note [ZeRO-2 gradient
// ring] in parallel/grad_sync.h); the optimizer reads the same summed shard gradients.
//
// DpGradSync in reduce-scatter mode leaves each DP rank r with the summed gradient of its shard: chunk r of
// every gradient bucket (Note [DP gradient buckets] in parallel/grad_sync.h). The optimizer keeps m and v for
// those elements only (shard_numel = sum over buckets of ceil(bucket size / D), about 1/D of the model),
// updates the parameters of the shard in place in the model's flat parameter buffer, and all-gathers the
// updated shards per bucket so that every DP rank again holds every parameter. The update of each element is
// the very same AdamW arithmetic as in plain AdamW (parallel/optimizer.h); only where it runs changes.
//
// A shard cuts through parameters, so weight decay (parameters of two or more dimensions only) and the
// gradient-norm count (LocalParam::counted) are applied per shard segment: each segment is a piece of one
// parameter.
#pragma once

#include <vector>

#include "core/backend.h"
#include "parallel/model.h"
#include "parallel/grad_sync.h"
#include "parallel/optimizer.h"
#include "parallel/process_group.h"

namespace tessera {

class ZeroAdamW final : public Optimizer {
 public:
  // sync: the model's gradient sync, in DpGradSync::Mode::kReduceScatter or kShardedGradients. norm_groups:
  // the groups other than DP that hold disjoint parts of the model (TP, PP); grad_norm() sums over them and
  // over DP. Every reference must outlive this object. Allocates 2 * shard_numel floats; local.
  ZeroAdamW(Model& model, Backend& backend, DpGradSync& sync, AdamWConfig config,
            std::vector<ProcessGroup*> norm_groups);

  // sqrt of the sum over DP, TP and PP ranks of the squares of the summed gradient in this rank's counted
  // shard segments. Call after sync.finish(). Collective; synchronizes.
  double grad_norm() override;
  // AdamW on this rank's shard (from sync.shard()), then sync.gather_params(). Call after sync.finish().
  // Collective over the DP group; blocks until every parameter is updated on this rank.
  void step(double lr, double grad_scale) override;
  int64_t steps_taken() const override { return steps_; }

  // The moments of this rank's shard, [shard_numel], in shard order.
  Tensor shard_m() const { return m_; }
  Tensor shard_v() const { return v_; }

  // The shard's moments; its segments (sync.shard_segments()) say which parameter elements they hold.
  Tensor exp_avg() const override { return m_; }
  Tensor exp_avg_sq() const override { return v_; }
  std::vector<OptimizerStateRange> state_ranges() const override;
  bool state_sharded_over_dp() const override { return true; }
  void set_steps_taken(int64_t steps) override { steps_ = steps; }

 private:
  Model& model_;
  Backend& backend_;
  DpGradSync& sync_;
  AdamWConfig config_;
  std::vector<ProcessGroup*> norm_groups_;  // DP first, then the others
  Buffer m_buffer_, v_buffer_;
  Tensor m_, v_;
  int64_t steps_ = 0;
};

}  // namespace tessera

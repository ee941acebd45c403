// AdamW over one rank's parameter shard, with the global gradient norm and clipping.
//
// Moments live in two flat buffers laid out like the model's flat parameter buffer. Decoupled weight decay
// applies to parameters with two or more dimensions only (ParamSpec::weight_decay).
#pragma once

#include <vector>

#include "core/backend.h"
#include "parallel/model.h"
#include "parallel/process_group.h"

namespace tessera {

// Where an optimizer keeps AdamW's moments, for checkpoints (launcher/checkpoints/checkpoint.h): the moments of the
// model's flat parameter elements [flat_begin, flat_begin + size) are elements [state_begin, state_begin +
// size) of exp_avg() and exp_avg_sq().
struct OptimizerStateRange {
  int64_t flat_begin = 0;
  int64_t state_begin = 0;
  int64_t size = 0;
};

// What the trainer drives, whatever the layout of the optimizer state: plain AdamW (every DP rank holds all of
// it) or ZeRO-1 (parallel/zero_optimizer.h: each DP rank holds a shard).
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // Global L2 norm of the whole model's gradient, once the step's DP gradient sync has finished. Collective
  // over the groups the optimizer was built with; synchronizes.
  virtual double grad_norm() = 0;
  // One update of every local parameter from its gradient, scaled by grad_scale (clipping). Increments the
  // step count used for bias correction. Collective over the DP group under ZeRO-1.
  virtual void step(double lr, double grad_scale) = 0;
  virtual int64_t steps_taken() const = 0;

  // ---- state, for checkpoints. Local; no synchronization. ----
  // The moment buffers (on the backend's device) and which parameter elements they hold.
  virtual Tensor exp_avg() const = 0;
  virtual Tensor exp_avg_sq() const = 0;
  virtual std::vector<OptimizerStateRange> state_ranges() const = 0;
  // True when the DP ranks hold different parts of the state (ZeRO-1), false when each holds all of it.
  virtual bool state_sharded_over_dp() const = 0;
  // Restores a checkpoint's update count (bias correction); its moments are written into the buffers.
  virtual void set_steps_taken(int64_t steps) = 0;
};

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

class AdamW final : public Optimizer {
 public:
  // norm_groups: the groups grad_norm() sums over (global_grad_norm); the references must outlive this.
  AdamW(Model& model, Backend& backend, AdamWConfig config, std::vector<ProcessGroup*> norm_groups = {});

  // global_grad_norm(model, backend, norm_groups).
  double grad_norm() override;
  void step(double lr, double grad_scale) override;
  int64_t steps_taken() const override { return steps_; }
  Tensor flat_m() const { return m_; }
  Tensor flat_v() const { return v_; }

  // The moments of every local parameter, laid out like the flat parameter buffer.
  Tensor exp_avg() const override { return m_; }
  Tensor exp_avg_sq() const override { return v_; }
  std::vector<OptimizerStateRange> state_ranges() const override { return {{0, 0, m_.numel()}}; }
  bool state_sharded_over_dp() const override { return false; }
  void set_steps_taken(int64_t steps) override { steps_ = steps; }

 private:
  Model& model_;
  Backend& backend_;
  AdamWConfig config_;
  std::vector<ProcessGroup*> norm_groups_;
  Buffer m_buffer_, v_buffer_;
  Tensor m_, v_;
  int64_t steps_ = 0;
};

// L2 norm of the gradient of the whole model: local sums of squares of the parameters this rank counts
// (LocalParam::counted), summed over `groups` (the TP and PP groups: every rank of a DP group holds the
// same averaged gradients). Synchronizes.
double global_grad_norm(Model& model, Backend& backend, const std::vector<ProcessGroup*>& groups);

// The sum over `groups` (null or size-1 groups skipped, one group after the other) of each rank's `local`,
// to nearly double precision and bit-identical on every rank (sent as a high and a low float part, added in
// double in rank order). Collective over every group given; synchronizes.
double sum_over_groups(double local, const std::vector<ProcessGroup*>& groups);

// The factor PyTorch's clip_grad_norm_ applies: min(1, max_norm / (norm + 1e-6)); 1 when max_norm is 0.
double clip_factor(double grad_norm, double max_norm);

}  // namespace tessera

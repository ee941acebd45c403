// AdamW over one rank's parameter shard, with the global gradient norm and clipping.
//
// Moments live in two flat buffers laid out like the model's flat parameter buffer. Decoupled weight decay
// applies to parameters with two or more dimensions only (ParamSpec::weight_decay).
#pragma once

#include <vector>

#include "core/backend.h"
#include "parallel/gpt2_model.h"
#include "parallel/process_group.h"

namespace tessera {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

class AdamW {
 public:
  AdamW(Gpt2Model& model, Backend& backend, AdamWConfig config);

  // One update of every local parameter from its gradient, scaled by grad_scale (clipping). Increments the
  // step count used for bias correction.
  void step(double lr, double grad_scale);
  int64_t steps_taken() const { return steps_; }
  // Restores the step count of a checkpoint (with its moments, written into flat_m() and flat_v()).
  void set_steps_taken(int64_t steps) { steps_ = steps; }
  Tensor flat_m() const { return m_; }
  Tensor flat_v() const { return v_; }

 private:
  Gpt2Model& model_;
  Backend& backend_;
  AdamWConfig config_;
  Buffer m_buffer_, v_buffer_;
  Tensor m_, v_;
  int64_t steps_ = 0;
};

// L2 norm of the gradient of the whole model: local sums of squares of the parameters this rank counts
// (LocalParam::counted), summed over `groups` (the TP and PP groups: every rank of a DP group holds the
// same averaged gradients). Synchronizes.
double global_grad_norm(Gpt2Model& model, Backend& backend, const std::vector<ProcessGroup*>& groups);

// The factor PyTorch's clip_grad_norm_ applies: min(1, max_norm / (norm + 1e-6)); 1 when max_norm is 0.
double clip_factor(double grad_norm, double max_norm);

}  // namespace tessera

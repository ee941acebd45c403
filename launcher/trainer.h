// Trainer: one optimizer step over a global batch — micro-batches through the model shard, gradients summed
// across data-parallel ranks, global norm, clipping, AdamW — and evaluation.
//
// Data order (DESIGN invariant 3): step s consumes global samples [s*G, (s+1)*G), G = global batch. DP rank d
// of D takes the contiguous slice [d*G/D, (d+1)*G/D) of it, and micro-batch m of M the m-th of that slice.
// The loss of every micro-batch is scaled by 1/(G*T), so the summed gradient is that of the mean loss over
// the whole global batch, whatever the layout.
#pragma once

#include <cstdint>
#include <vector>

#include "core/backend.h"
#include "core/lr_schedule.h"
#include "launcher/sampler.h"
#include "parallel/gpt2_model.h"
#include "parallel/grad_sync.h"
#include "parallel/optimizer.h"
#include "parallel/process_group.h"

namespace tessera {

struct TrainerOptions {
  int global_batch = 1;
  int micro_batches = 1;  // per DP rank
  int seq_len = 1;
  double grad_clip = 0;  // 0: no clipping
  LrSchedule lr;
};

struct StepResult {
  double loss = 0;       // mean cross-entropy over the global batch, before the update
  double grad_norm = 0;  // global L2 norm before clipping
  double lr = 0;
  bool skipped = false;  // the loss or the norm was not finite; no update was made
};

class Trainer {
 public:
  // All references must outlive the trainer. grad_sync: the model's DP gradient sync (in reduce-scatter mode
  // when optimizer is ZeRO-1).
  Trainer(Gpt2Model& model, Optimizer& optimizer, DpGradSync& grad_sync, Backend& backend, ParallelGroups& groups,
          TrainerOptions options);

  // Runs optimizer step `step` (0-based) on samples from source.
  StepResult train_step(int step, const Sampler& source);
  // Mean loss over `batches` global batches starting at global sample `first_sample`; no update.
  double evaluate(const Sampler& source, int64_t first_sample, int batches);

 private:
  // Loads micro-batch m of the global batch starting at `first_sample` into the model's slot 0.
  void load_micro_batch(const Sampler& source, int64_t first_sample, int m);
  // Runs every micro-batch of this rank; returns the global mean loss.
  double run_batch(const Sampler& source, int64_t first_sample, bool train);

  Gpt2Model& model_;
  Optimizer& optimizer_;
  DpGradSync& grad_sync_;
  Backend& backend_;
  ParallelGroups& groups_;
  TrainerOptions options_;
  int micro_batch_size_;
  std::vector<int32_t> host_inputs_, host_targets_, sample_inputs_, sample_targets_;
};

}  // namespace tessera

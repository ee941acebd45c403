// Trainer: one optimizer step over a global batch — micro-batches through this rank's model shard (and,
// with pipeline parallelism, through the stages before and after it), gradients summed across data-parallel
// ranks, the tied embedding's gradients summed across the first and last stage, global norm, clipping,
// AdamW — and evaluation.
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
#include "parallel/pipeline_schedule.h"
#include "parallel/process_group.h"

namespace tessera {

struct TrainerOptions {
  int global_batch = 1;
  int micro_batches = 1;  // per DP rank
  int seq_len = 1;
  double grad_clip = 0;  // 0: no clipping
  PipelineKind schedule = PipelineKind::kOneFOneB;
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
  // when optimizer is ZeRO-1). The model must have been planned with at least
  // pipeline_in_flight(schedule, pp, stage, micro_batches) slots.
  Trainer(Gpt2Model& model, Optimizer& optimizer, DpGradSync& grad_sync, Backend& backend, ParallelGroups& groups,
          TrainerOptions options);

  // Runs optimizer step `step` (0-based) on samples from source. Every rank returns the same result.
  StepResult train_step(int step, const Sampler& source);
  // Mean loss over `batches` global batches starting at global sample `first_sample`; no update.
  double evaluate(const Sampler& source, int64_t first_sample, int batches);

 private:
  // Loads micro-batch m of the global batch starting at first_sample into the model's `slot`: tokens on the
  // first stage, targets on the last.
  void load_micro_batch(const Sampler& source, int64_t first_sample, int m, int slot);
  // Runs this rank's part of every micro-batch; returns the global mean loss (on every rank).
  double run_batch(const Sampler& source, int64_t first_sample, bool train);
  // Waits for the sends still reading a slot's activations (before the slot is reused).
  void wait_slot_sends(int slot);
  // Sums the tied embedding's gradient across the first and last pipeline stage.
  void sum_tied_embedding_grads();

  Gpt2Model& model_;
  Optimizer& optimizer_;
  DpGradSync& grad_sync_;
  Backend& backend_;
  ParallelGroups& groups_;
  TrainerOptions options_;
  int micro_batch_size_;
  int stage_, stages_;
  std::vector<PipelineAction> train_schedule_, eval_schedule_;
  std::vector<int32_t> host_inputs_, host_targets_;
  std::vector<WorkHandle> slot_sends_;  // activation send per slot
  WorkHandle grad_send_;                // the last input-gradient send (reads the model's d_input buffer)
  // Last stage: every micro-batch's per-token losses, [micro_batches, B*T], copied on the device after each
  // forward and read once at the end of the batch (no host synchronization per micro-batch).
  Buffer loss_buffer_;
  Tensor step_losses_;
  std::vector<float> host_step_losses_;
  Buffer exchange_buffer_;  // output gradient received from the next stage; tied-embedding peer
  Tensor d_output_, peer_embedding_grad_;
};

}  // namespace tessera

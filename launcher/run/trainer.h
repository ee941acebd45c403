// Trainer: one optimizer step over a global batch — micro-batches through this rank's model shard (and,
// with pipeline parallelism, through the stages before and after it: parallel/pipeline_executor.h), gradients
// summed across data-parallel ranks, global norm, clipping, AdamW — and evaluation.
//
// Data order (DESIGN invariant 3): step s consumes global samples [s*G, (s+1)*G), G = global batch. DP rank d
// of D takes the contiguous slice [d*G/D, (d+1)*G/D) of it, and micro-batch m of M the m-th of that slice.
// The loss of every micro-batch is scaled by 1/(G*T), so the summed gradient is that of the mean loss over
// the whole global batch, whatever the layout.
//
// Note [Masked loss]. A source with a loss mask (supervised fine-tuning, Sampler::has_loss_mask) counts only the
// targets whose mask is 1: the loss is the mean over the K counted targets of the whole global batch, each
// token's loss weighted by mask / K. Every rank reads the masks of the whole global batch before the step, so
// K is known everywhere without communication; the last stage loads its micro-batches' masks as the model's
// loss weights and the gradient is scaled by 1/K. The sum of weighted losses over the pipeline and DP, divided
// by K, is then exact in every layout. Without a mask nothing of this runs (the numbers are those of 1/(G*T)).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/backend.h"
#include "core/lr_schedule.h"
#include "launcher/data/sampler.h"
#include "launcher/run/spike_detector.h"
#include "parallel/grad_sync.h"
#include "parallel/model.h"
#include "parallel/optimizer.h"
#include "parallel/pipeline_executor.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/process_group.h"

namespace tessera {

struct TrainerOptions {
  int global_batch = 1;
  int micro_batches = 1;  // per DP rank
  int seq_len = 1;
  double grad_clip = 0;  // 0: no clipping
  double spike_zscore = 0;  // 0: no spike guard (spike_detector.h)
  PipelineKind schedule = PipelineKind::kOneFOneB;
  LrSchedule lr;
};

struct StepResult {
  double loss = 0;       // mean cross-entropy over the global batch (its counted targets), before the update
  double grad_norm = 0;  // global L2 norm before clipping
  double lr = 0;
  bool skipped = false;  // no update was made: the loss or the norm was not finite, or a spike
  bool spike = false;    // skipped as a spike (TrainerOptions::spike_zscore)
};

class Trainer {
 public:
  // All references must outlive the trainer. grad_sync: the model's DP gradient sync (in reduce-scatter mode
  // when optimizer is ZeRO-1). The model must have been planned with at least
  // pipeline_in_flight(schedule, pp, stage, micro_batches, model.stage().chunk_count()) slots.
  Trainer(Model& model, Optimizer& optimizer, DpGradSync& grad_sync, Backend& backend, ParallelGroups& groups,
          TrainerOptions options);

  // Runs optimizer step `step` (0-based) on samples from source. Every rank returns the same result. With
  // spike_zscore, a loss or gradient norm more than that many standard deviations above the recent ones
  // (SpikeDetector) skips the update.
  StepResult train_step(int step, const Sampler& source);
  // Test hook: steps [first, first + count) (0-based) report their loss multiplied by 1000 (a pathological
  // batch), before the spike guard looks at it.
  void inject_loss_spikes(int first, int count) {
    spike_first_ = first;
    spike_count_ = count;
  }
  // Mean loss over `batches` global batches starting at global sample `first_sample`; no update. after_batch,
  // if set, is called on every rank with the number of batches done after each one (for progress).
  double evaluate(const Sampler& source, int64_t first_sample, int batches,
                  const std::function<void(int)>& after_batch = nullptr);
  // The per-token losses of the global batch starting at `first_sample`, [global_batch * seq_len] in sample
  // order, on every rank; no update. (Scoring: the log-likelihood of chosen positions.)
  std::vector<float> token_losses(const Sampler& source, int64_t first_sample);

 private:
  // Loads micro-batch m of the global batch starting at first_sample into the model's `slot`: tokens on the
  // first stage, targets on the last.
  void load_micro_batch(const Sampler& source, int64_t first_sample, int m, int slot);
  // The targets of the global batch starting at first_sample that count in the loss (Note [Masked loss]), the
  // same on every rank; G*T for a source without a mask.
  int64_t counted_targets(const Sampler& source, int64_t first_sample);
  // The global mean loss of the batch just run (on every rank), over `counted` targets; weighted by the loaded
  // masks when the source has them.
  double mean_loss(const Sampler& source, int64_t counted);

  Model& model_;
  Optimizer& optimizer_;
  DpGradSync& grad_sync_;
  Backend& backend_;
  ParallelGroups& groups_;
  TrainerOptions options_;
  int micro_batch_size_;
  PipelineExecutor pipeline_;
  std::vector<int32_t> host_inputs_, host_targets_;
  std::vector<uint8_t> host_mask_;   // one sample's loss mask
  std::vector<float> host_weights_;  // [micro_batches * B * T]: the loaded micro-batches' masks, in order
  SpikeDetector loss_spikes_, norm_spikes_;
  int spike_first_ = -1, spike_count_ = 0;
};

}  // namespace tessera

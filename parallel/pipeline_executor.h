// PipelineExecutor: runs one batch of micro-batches through this rank's pipeline stage of a Model, in the
// order of a pipeline schedule (parallel/pipeline_schedule.h), exchanging activations and their gradients with
// the neighbouring stages over the `pp` group. Training, evaluation and inference all run pipelines through it.
//
// Per micro-batch m and model chunk (in the slot the schedule assigns; one chunk but with virtual stages, Note
// [Interleaved 1F1B] in parallel/pipeline_schedule.h): a forward loads its inputs through the caller's `load`
// (tokens on the first stage's chunk 0, targets on the last stage's last chunk), or receives the previous
// virtual stage's output, runs the chunk and sends its output on; the last stage copies the micro-batch's
// per-token losses into a buffer that is read once per batch (no host synchronization per micro-batch). A
// backward receives the output gradient from the next virtual stage, runs the chunk's backward and sends the
// input gradient back. After the rank's last backward the gradient of a parameter tied across the first and
// last stage (Model::tied_grad) is summed over the two. With sequence parallelism the activations and gradients
// exchanged are each TP rank's [stage_rows(), C] chunk, and each chunk's last micro-batch's backward sums the
// norms' partial gradients over TP block by block (Model::reduce_sequence_parallel_grads) before the DP sync
// hears that the block is done.
//
// Message tags: activations and gradients of one (chunk, micro-batch) never share a tag within a batch; MPI
// keeps messages of equal tag in order across batches. Every method is collective over pp.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/backend.h"
#include "parallel/model.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/process_group.h"

namespace tessera {

class PipelineExecutor {
 public:
  // Loads micro-batch m's inputs into the model's `slot` (model.tokens(slot) on the first stage,
  // model.targets(slot) on the last), before the forward of the chunk that reads them (the first stage's
  // chunk 0, the last stage's last chunk); not called on middle stages.
  using Load = std::function<void(int micro_batch, int slot)>;
  // What a training batch tells the data-parallel gradient sync: layer_done(l) right after block l's backward
  // of the last micro-batch (in decreasing l), gradients_done() once every gradient of this stage is final
  // (after the tied parameter's sum). For ZeRO-2's per-micro-batch reduction (Note [ZeRO-2 gradient ring] in
  // parallel/grad_sync.h), also of every micro-batch: backward_begin(chunk) right before its backward of a chunk,
  // block_done(l) right after block l's backward (before the same block's layer_done on the last one). Any
  // may be empty.
  struct GradientEvents {
    std::function<void(int layer)> layer_done;
    std::function<void()> gradients_done;
    std::function<void(int chunk)> backward_begin;
    std::function<void(int layer)> block_done;
  };

  // model must have been planned with at least pipeline_in_flight(schedule, pp.size(), pp.rank(),
  // micro_batches, model.stage().chunk_count()) slots; all references must outlive the executor.
  PipelineExecutor(Model& model, Backend& backend, ProcessGroup& pp, PipelineKind schedule, int micro_batches);

  // Forward and backward of every micro-batch in schedule order; every micro-batch's loss is scaled by
  // d_scale in the gradient. Parameter gradients accumulate.
  void train_batch(float d_scale, const Load& load, const GradientEvents& events);
  // Forward of every micro-batch, in order, computing losses only.
  void eval_batch(const Load& load);
  // On the last stage: the sum of every micro-batch's per-token losses of the batch just run, each
  // micro-batch's sum taken in order, then the micro-batches in order (one host read); 0 elsewhere. With
  // weights ([micro_batches * B * T] on the host, in micro-batch order), each loss is multiplied by its weight.
  double loss_sum(const float* weights = nullptr);
  // On the last stage: the per-token losses of the batch just run, [micro_batches * B * T] in micro-batch
  // order (one host read); empty elsewhere.
  std::vector<float> token_losses();

 private:
  void run(const std::vector<PipelineAction>& schedule, bool train, float d_scale, const Load& load,
           const GradientEvents* events);
  // Waits for the sends still reading a slot's activations (before the slot is reused).
  void wait_slot_sends(int slot);
  void sum_tied_grads();

  Model& model_;
  Backend& backend_;
  ProcessGroup& pp_;
  int micro_batches_;
  int stage_, stages_;
  int chunks_;  // model chunks of this rank (virtual stages, Note [Interleaved 1F1B])
  std::vector<PipelineAction> train_schedule_, eval_schedule_;
  int last_backward_;                   // index in train_schedule_ of the rank's last backward
  std::vector<std::string> layers_;     // per chunk "[layers 0-1]": its blocks, for trace event names
  std::vector<WorkHandle> slot_sends_;  // activation send per slot
  WorkHandle grad_send_;                // the last input-gradient send (reads the model's d_input buffer)
  // Last stage: every micro-batch's per-token losses, [micro_batches, B*T].
  Buffer loss_buffer_;
  Tensor step_losses_;
  std::vector<float> host_step_losses_;
  Buffer exchange_buffer_;  // output gradient received from the next stage; the tied parameter's peer copy
  Tensor d_output_, peer_tied_grad_;
};

}  // namespace tessera

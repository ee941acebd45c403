// Model: the seam between a model architecture and everything that trains, evaluates or stores one. A Model is
// one rank's shard of a transformer: a pipeline stage (a range of blocks, or with virtual stages several model
// chunks of them, plus the embedding on the first stage and the final norm and output head on the last),
// tensor-parallel across the `tp` group.
//
// What generic code may rely on, and all it may rely on (the optimizer, ZeRO-1, the DP gradient sync, the
// pipeline executor, checkpoints):
//   - the parameters: LocalParams (spec, shard layout, master value, compute copy, gradient) back to back in
//     two flat f32 buffers (values and gradients) in params() order, plus a compute copy when the compute
//     dtype is not f32;
//   - each ParamSpec's layout-independent description, including whether the parameter is tied across the
//     first and last pipeline stage (ParamSpec::tied_across_stages) and where in backward its gradient is
//     complete (ParamSpec::place);
//   - the stage's inputs and outputs per activation slot, forward, backward and the backward hook;
//   - a logits-only forward for inference.
// Nothing outside a model's own folder names one of its parameters. Each architecture lives in models/<name>/
// and is registered in models/registry.cc.
//
// Precision (core/backend.h, Note [Precision]): activations and the parameters' compute copies have the dtype
// config.dtype (f32, or bf16 for mixed precision); master weights (LocalParam::value, what the optimizer updates
// and checkpoints hold) and gradients are f32. With f32 compute the copy is the master itself.
//
// Slots: activations for `slots` micro-batches are planned once at construction; a micro-batch occupies one
// slot from its forward until its backward (with several chunks, a micro-batch's pass through one chunk does:
// the pipeline schedule assigns the slots, PipelineAction::slot). Nothing is allocated per step.
//
// Sequence parallelism (ModelConfig::sequence_parallel, Note [Sequence parallelism] in parallel/tensor_parallel.h):
// a training model with tp > 1 keeps its stage input and output, their gradients and its blocks' norm/residual
// activations as this TP rank's chunk of stage_rows() = B*T/tp tokens, and sums its norms' partial gradients over
// TP in reduce_sequence_parallel_grads.
//
// Recomputation (ModelConfig::recompute, Note [Recomputation] in models/gpt2/gpt2_model.cc): a training model may
// store only part of a block's activations per slot and re-run part of the block's forward at the start of its
// backward, into buffers shared by every slot and block. The forward and backward calls, their results and the
// collectives' order on every TP rank are the same in every mode.
#pragma once

#include <algorithm>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/backend.h"
#include "core/model_config.h"
#include "core/param_spec.h"
#include "parallel/process_group.h"

namespace tessera {

// What a Model is built for. kTrain: parameters and gradients, activations of every micro-batch in flight kept for
// the backward. kInference (Note [Inference plan]): parameters only — no gradient buffer (LocalParam::grad and
// flat_grads() are undefined), no targets, losses or backward scratch — activations of one layer at a time, and
// a key/value cache per layer for decode().
enum class ModelUse { kTrain, kInference };

// Note [Inference plan]
// An inference model is planned with slots = 1 and seq_len = the longest sequence it will decode (at most
// config.max_seq_len); its blocks share one set of activation buffers (a block's are dead once the next block
// has read its output), and each block holds K and V caches of [micro_batch, seq_len, local kv heads, head size]
// in the compute dtype. forward_logits runs over all seq_len positions of slot 0 (what a full recomputation
// uses); decode() runs only the new positions over the cache. Training numbers do not depend on this plan: a
// kTrain model is planned exactly as before inference existed.

// Bytes of a model's activation arena (docs/memory.md): what is planned for every slot (all slots together), what
// all slots share (logits, backward scratch, the buffers recomputed blocks refill), and what the same stage
// would plan with ModelConfig::recompute kNone.
struct ActivationMemory {
  int64_t slot_bytes = 0;
  int64_t shared_bytes = 0;
  int64_t none_bytes = 0;
  int64_t total() const { return slot_bytes + shared_bytes; }
};

// The layers this rank's pipeline stage runs: one contiguous range of blocks, or with virtual stages (Note
// [Interleaved 1F1B] in parallel/pipeline_schedule.h) several model chunks, each a contiguous range.
struct StageRange {
  int first_layer = 0;
  int end_layer = 0;          // exclusive
  bool has_embedding = true;  // first stage (the embedding runs at the start of chunk 0)
  bool has_head = true;       // last stage (the head runs at the end of the last chunk)
  // The chunks' [first, end) block ranges in chunk order (increasing layers); empty: one chunk [first_layer,
  // end_layer). With several chunks, first_layer and end_layer span them all (the blocks between belong to
  // other ranks): use chunk() and holds_layer().
  std::vector<std::pair<int, int>> chunks = {};

  int chunk_count() const { return chunks.empty() ? 1 : static_cast<int>(chunks.size()); }
  std::pair<int, int> chunk(int c) const {
    return chunks.empty() ? std::pair<int, int>{first_layer, end_layer} : chunks[static_cast<size_t>(c)];
  }
  // Blocks over all chunks.
  int layer_count() const {
    int n = 0;
    for (int c = 0; c < chunk_count(); ++c) n += chunk(c).second - chunk(c).first;
    return n;
  }
  // The most blocks any one chunk holds.
  int max_chunk_layers() const {
    int n = 0;
    for (int c = 0; c < chunk_count(); ++c) n = std::max(n, chunk(c).second - chunk(c).first);
    return n;
  }
  bool holds_layer(int layer) const {
    for (int c = 0; c < chunk_count(); ++c)
      if (layer >= chunk(c).first && layer < chunk(c).second) return true;
    return false;
  }
};

// Note [Gradient storage]
// A training model's gradients are stored in one of two ways (ModelConfig::gradient_storage):
//   kFlat: one buffer of every gradient back to back in params() order; LocalParam::offset indexes it, exactly
//     like the flat parameter buffer. Gradients accumulate over all of a step's micro-batches.
//   kLayerRing (ZeRO stage 2): the input- and output-side parameters (ParamSpec::place kInput, kOutput: the
//     embeddings, final norm, head) stay resident, back to back in params() order at the front of the buffer,
//     and accumulate over the step like kFlat. The blocks' gradients live in a ring of R = min(gradient_ring,
//     held blocks) one-layer slots after them: held block i (the stage's i-th block in increasing layer order,
//     over all its chunks) writes slot i % R,
//     its parameters back to back there in params() order. Every block of a stage has the same parameter
//     shapes, so one slot fits any (asserted); each slot is padded with zeros to a multiple of
//     gradient_ring_align elements. A slot holds one block's gradient of ONE micro-batch: whoever drives
//     backward must consume it (the ZeRO-2 gradient sync reduce-scatters it, parallel/grad_sync.h) and zero it
//     before another block's backward (the next one down in the chunk, or the top one of the next chunk's or
//     micro-batch's backward) runs into it.
// LocalParam::offset stays the LOGICAL offset in either mode (what gradient buckets, ZeRO shards, optimizer
// state ranges and checkpoints speak in); only where LocalParam::grad points differs. kLayerRing needs
// gradient_ring * (one block) + resident instead of all parameters' worth of f32 (gradient_bytes()).

// One parameter as this rank holds it.
struct LocalParam {
  ParamSpec spec;
  ShardLayout layout;
  Tensor value;        // f32 master weights
  Tensor compute;      // what forward and backward read: value itself, or its bf16 copy
  Tensor grad;         // f32; where it lives: Note [Gradient storage]
  int64_t offset = 0;  // elements into the flat parameter buffer: the logical offset of value and gradient
  // True on the one TP rank whose copy counts in global reductions over all parameters (e.g. the gradient
  // norm): split parameters count on every rank, replicated ones on tp rank 0 only; a tied parameter's copy
  // on the last pipeline stage mirrors the first stage's and does not count.
  bool counted = true;
};

// Whether this stage holds a parameter: block parameters of its layers, input-side parameters on the first
// stage, output-side ones on the last, and a tied parameter on both.
bool stage_holds(const StageRange& stage, const ParamSpec& spec);

// Whether the j-th block of an activation slot of `stage` may be recomputed (ModelConfig::recomputes): a slot
// serves every chunk, so only when every chunk's j-th block is. The models' plans and their arena formulas
// (models/arena_plan.h) both ask this.
bool slot_layer_recomputed(const ModelConfig& config, const StageRange& stage, int j);

class Model {
 public:
  virtual ~Model() = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  const StageRange& stage() const { return stage_; }
  int slots() const { return slots_; }
  int micro_batch() const { return micro_batch_; }
  int seq_len() const { return seq_len_; }
  ModelUse use() const { return use_; }
  // Whether this model runs sequence-parallel: config().sequence_parallel on a training model with tp > 1.
  bool sequence_parallel() const { return sequence_parallel_; }
  // Rows (tokens) of stage_input, stage_output and their gradients: B*T, or this TP rank's B*T/tp with sequence
  // parallelism.
  int64_t stage_rows() const;
  // This rank's activation arena, planned at construction (ActivationMemory).
  const ActivationMemory& activation_memory() const { return activation_memory_; }

  // ---- parameters ----
  std::vector<LocalParam>& params() { return params_; }
  const std::vector<LocalParam>& params() const { return params_; }
  const LocalParam* find_param(const std::string& name) const;
  // Every local parameter back to back, in params() order (LocalParam::offset indexes it).
  Tensor flat_params() const { return flat_params_; }
  // All of the gradient storage (Note [Gradient storage]). kFlat: every gradient back to back in params()
  // order, indexed by LocalParam::offset. kLayerRing: the resident gradients in params() order, then the ring
  // slots; LocalParam::offset does NOT index it (use LocalParam::grad, grad_range or gradient_ring_slot).
  // Undefined for an inference model.
  Tensor flat_grads() const { return flat_grads_; }
  GradientStorage gradient_storage() const { return gradient_storage_; }
  // Bytes of gradient storage this rank holds: flat_grads().numel() * 4 (0 for an inference model).
  int64_t gradient_bytes() const;
  // kLayerRing: the number of ring slots R, and the ring slot of global block `layer` (one this stage holds);
  // -1 for kFlat. gradient_ring_slot(s): slot s, [padded slot size] f32, its block's parameters from element 0.
  int gradient_ring_slots() const { return static_cast<int>(ring_slots_.size()); }
  int gradient_ring_slot_of(int layer) const;
  Tensor gradient_ring_slot(int slot) const { return ring_slots_[slot]; }
  // The gradients of parameters [first, end) as one flat f32 tensor; they must be back to back in storage
  // (any run of parameters with kFlat; with kLayerRing a run within one block, or of resident parameters with
  // no block between them). Asserted.
  Tensor grad_range(int first, int end) const;
  // The compute copies back to back (the same tensor as flat_params() with f32 compute).
  Tensor flat_compute_params() const { return flat_compute_; }
  bool has_compute_copy() const { return flat_compute_.data() != flat_params_.data(); }
  // Rewrites the compute copies from the master weights (rounding to bf16); nothing with f32 compute. Call after
  // anything but the optimizer's fused update writes master weights (initialization does it itself).
  void refresh_compute_params();
  // Layout-independent initialization (core/init.h): a function of seed and global position only.
  void init_parameters(uint64_t seed);
  void zero_grads();
  // The gradient of the parameter tied across the first and last pipeline stage (ParamSpec::tied_across_stages,
  // e.g. GPT-2's token embedding, which is also its output head), or an undefined tensor when this stage holds
  // none. With pipeline parallelism each of the two stages holds a copy whose gradients must be summed before
  // the update.
  Tensor tied_grad() const { return tied_ >= 0 ? params_[tied_].grad : Tensor(); }

  // Sequence parallelism: sums over TP the gradients of this stage's ParamSpec::sequence_parallel_grad parameters
  // that become complete with block `layer` (its global index: that block's, and with the stage's last block
  // also the output side's), or with layer -1 at the end of backward (the input side's, and the output side's on
  // a stage without blocks). Their gradients are partial sums over this rank's tokens until then. Call it once
  // per step for each block and for -1, after the step's last micro-batch's backward of that block and before
  // anything reads those gradients: the pipeline executor does, from the backward hook of the last micro-batch
  // (Note [Sequence parallelism] in parallel/tensor_parallel.h). With blocks_only, only block `layer`'s own
  // parameters: what a gradient ring slot (Note [Gradient storage]) holds of one micro-batch, summed after every
  // micro-batch's backward of the block before the slot is consumed (the output side still waits for the last).
  // Collective over tp; nothing without sequence parallelism.
  void reduce_sequence_parallel_grads(int layer, bool blocks_only = false);

  // ---- the stage ----
  // Chunks (StageRange::chunks): the stage runs chunk by chunk; a chunk's forward or backward of a micro-batch
  // uses one activation slot, which the pipeline schedule assigns (PipelineAction::slot) from one pool of
  // slots() shared by all chunks, so every slot is planned for the largest chunk (and the head's buffers on the
  // last stage). With one chunk (chunk 0 everywhere) this is the plain pipeline stage.
  // Inputs of a slot, filled by the caller: tokens[B*T] (first stage, read by chunk 0), targets[B*T] (last
  // stage, read by the last chunk), stage_input[stage_rows(), C] (the previous virtual stage's output; every
  // chunk but the first stage's chunk 0).
  virtual Tensor tokens(int slot) const = 0;
  virtual Tensor targets(int slot) const = 0;
  virtual Tensor stage_input(int chunk, int slot) const = 0;
  // The last stage's per-token loss weights [B*T] (f32) of a slot, filled by the caller like targets; read by
  // forward only while loss weighting is on.
  virtual Tensor loss_weights(int slot) const = 0;
  // Loss weighting (supervised fine-tuning's loss mask): while on, the last stage's forward takes the gradient
  // of d_scale * sum_i loss_weights[i] * losses[i] instead of d_scale * sum(losses). Off by default; losses()
  // stay unweighted either way.
  void set_loss_weighting(bool on) { loss_weighting_ = on; }
  bool loss_weighting() const { return loss_weighting_; }
  // Runs `chunk` on the micro-batch in `slot`. On the last stage's last chunk also computes per-token losses
  // and, when train is true, the gradient of d_scale * sum(losses) through the head (the rest in backward()).
  virtual void forward(int chunk, int slot, bool train, float d_scale) = 0;
  // Inference: runs this stage on `slot` without targets, losses or gradients. On the last stage returns this
  // TP rank's logits [B*T, V_local] (vocabulary entries [vocab_start(), vocab_start() + V_local), of which the
  // first valid_vocab() are real), valid until the next forward of any slot; elsewhere an undefined tensor.
  virtual Tensor forward_logits(int slot) = 0;
  // The last stage's per-token losses [B*T] (f32) of `slot`, after forward; valid until the slot's next forward.
  virtual Tensor losses(int slot) const = 0;
  // [stage_rows(), C] output of `chunk` (not of the last stage's last chunk), after its forward.
  virtual Tensor stage_output(int chunk, int slot) const = 0;
  // Backward through `chunk`. d_output: gradient of the loss w.r.t. stage_output(chunk, slot) (ignored on the
  // last stage's last chunk, which starts from its own loss). Parameter gradients accumulate.
  virtual void backward(int chunk, int slot, Tensor d_output) = 0;
  // [stage_rows(), C] gradient w.r.t. stage_input of the chunk of the last backward (not on the first stage's
  // chunk 0); one buffer for every chunk, valid until the next backward.
  virtual Tensor stage_input_grad() const = 0;
  // Called by backward() with a block's global index right after that block's backward, and with -1 at the
  // end of backward() (after the embedding's, on the first stage's chunk 0). The DP gradient sync
  // (parallel/grad_sync.h) starts its buckets from it. Empty (the default): no calls.
  void set_backward_hook(std::function<void(int layer)> hook) { backward_hook_ = std::move(hook); }
  // ---- inference with a key/value cache (ModelUse::kInference only) ----
  // Runs this stage on n_new new tokens of each of the micro_batch sequences, at positions [position, position +
  // n_new), attending over the keys and values of positions [0, position) that earlier calls cached, and caches
  // theirs (position 0 starts new sequences; position + n_new <= seq_len()). Inputs, filled by the caller:
  // decode_tokens(n_new) on the first stage, decode_input(n_new) on the others. Returns on the last stage this TP
  // rank's logits [B * n_new, V_local] (as forward_logits), elsewhere the stage's output [B, n_new, C] to pass to
  // the next stage's decode_input; valid until the next call. Collective over tp.
  virtual Tensor decode(int position, int n_new) = 0;
  // Bytes of the activation arena planned at construction (every slot's activations, the logits, the backward
  // scratch; an inference model's caches): what the layout planner predicts (models/arena_plan.h).
  virtual size_t arena_bytes() const = 0;
  // The first B * n_new token ids (i32, [B, n_new] row-major) of slot 0's tokens(): decode's input on the first
  // stage.
  Tensor decode_tokens(int n_new) const;
  // [B, n_new, C], the front of slot 0's stage_input(0, 0): decode's input on the other stages.
  Tensor decode_input(int n_new) const;

  // This TP rank's first vocabulary entry and how many of its rows are real (the rest is padding).
  int64_t vocab_start() const { return vocab_start_; }
  int64_t valid_vocab() const { return valid_vocab_; }

 protected:
  // Takes this stage's parameters from `specs` (the architecture's, in its order), slices them for this TP
  // rank and lays them out in the flat buffers (zero; init_parameters() fills them). tp must outlive the model.
  // Throws ConfigError when sequence parallelism cannot split micro_batch * seq_len tokens evenly over tp.
  Model(const ModelConfig& config, Backend& backend, ProcessGroup& tp, StageRange stage, int micro_batch, int seq_len,
        int slots, const std::vector<ParamSpec>& specs, ModelUse use);

  // This stage's blocks are numbered locally chunk by chunk (increasing global layers): chunk c holds local
  // blocks [chunk_begin(c), chunk_begin(c) + chunk_layers(c)).
  int chunk_begin(int chunk) const;
  int chunk_layers(int chunk) const { return stage_.chunk(chunk).second - stage_.chunk(chunk).first; }
  // The local index of global block `layer` (which this stage must hold).
  int local_layer(int layer) const;
  // Whether `chunk` starts with the embedding (the first stage's chunk 0) or ends with the head (the last
  // stage's last chunk).
  bool embedding_chunk(int chunk) const { return stage_.has_embedding && chunk == 0; }
  bool head_chunk(int chunk) const { return stage_.has_head && chunk == stage_.chunk_count() - 1; }
  // Whether the activations of a slot's j-th block may be recomputed (ModelConfig::recomputes): every chunk's
  // j-th block is (a slot serves every chunk).
  bool slot_layer_recomputed(int j) const;
  // The index in params() of the parameter `name` (which this stage must hold), for the model's own wiring.
  int param_index(const std::string& name) const;
  // The compute copy forward and backward read, and the gradient.
  Tensor value(int param) const { return params_[param].compute; }
  Tensor grad(int param) const { return params_[param].grad; }
  // Several parameters whose values and gradients lie back to back (first .. first + count - 1, each 2-D with
  // the same number of columns) as one matrix: a fused projection (Q, K, V; gate, up) is one GEMM. Rows add up.
  Tensor fused_value(int first, int count) const;
  Tensor fused_grad(int first, int count) const;
  void call_backward_hook(int layer) const {
    if (backward_hook_) backward_hook_(layer);
  }

  ModelConfig config_;
  Backend& backend_;
  StageRange stage_;
  int micro_batch_, seq_len_, slots_;
  ModelUse use_;
  int64_t vocab_rows_ = 0;  // this TP rank's rows of the padded vocabulary
  int64_t vocab_start_ = 0, valid_vocab_ = 0;
  bool loss_weighting_ = false;
  bool sequence_parallel_ = false;
  ActivationMemory activation_memory_;  // filled by the architecture's constructor

 private:
  // Lays out the gradient storage of `total` parameter elements (Note [Gradient storage]).
  void plan_gradients(int64_t total);
  // The tensors of parameters [first, first + count) chosen by `of` (compute copy or gradient) as one matrix.
  Tensor fused(Tensor LocalParam::*of, int first, int count) const;

  ProcessGroup& tp_group_;
  std::vector<LocalParam> params_;
  int tied_ = -1;
  Buffer param_buffer_, grad_buffer_, compute_buffer_;
  Tensor flat_params_, flat_grads_, flat_compute_;
  GradientStorage gradient_storage_ = GradientStorage::kFlat;
  std::vector<Tensor> ring_slots_;  // kLayerRing
  std::vector<int> ring_index_;     // kLayerRing: per layer - first_layer, its held-block index (-1: not held)
  std::function<void(int layer)> backward_hook_;
};

}  // namespace tessera

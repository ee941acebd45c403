// Gpt2Model: one rank's shard of a GPT-2 model — a pipeline stage (a range of blocks, plus the embedding on
// the first stage and the final norm + tied head on the last), tensor-parallel across the `tp` group.
//
// Tensor parallelism is Megatron's: in each block, QKV and MLP-fc are column-parallel (each rank owns whole
// heads / a slice of the hidden units), attention-proj and MLP-proj are row-parallel, and their partial
// outputs are summed with one all-reduce per block half in the forward pass; the gradients of the
// replicated LayerNorm inputs get one all-reduce per block half in the backward pass. The embedding and the
// output head are vocab-parallel: each rank holds a slice of (padded) vocabulary rows and the
// cross-entropy combines row statistics across ranks, never gathering the logits.
//
// Forward and backward are explicit. Activations for `slots` micro-batches are planned once at
// construction; a micro-batch occupies one slot from its forward until its backward.
//
// Precision (core/backend.h, Note [Precision]): activations and the parameters' compute copies have the dtype
// config.dtype (f32, or bf16 for mixed precision); master weights (LocalParam::value, what the optimizer updates
// and checkpoints hold) and gradients are f32. With f32 compute the copy is the master itself.
#pragma once

#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "core/backend.h"
#include "core/model_config.h"
#include "core/param_spec.h"
#include "core/tensor_arena.h"
#include "parallel/process_group.h"

namespace tessera {

// The layers this rank's pipeline stage runs.
struct StageRange {
  int first_layer = 0;
  int end_layer = 0;          // exclusive
  bool has_embedding = true;  // first stage
  bool has_head = true;       // last stage
};

// One parameter as this rank holds it.
struct LocalParam {
  ParamSpec spec;
  ShardLayout layout;
  Tensor value;        // f32 master weights
  Tensor compute;      // what forward and backward read: value itself, or its bf16 copy
  Tensor grad;         // f32
  int64_t offset = 0;  // elements into the flat parameter/gradient buffers
  // True on the one TP rank whose copy counts in global reductions over all parameters (e.g. the gradient
  // norm): split parameters count on every rank, replicated ones on tp rank 0 only.
  bool counted = true;
};

class Gpt2Model {
 public:
  // micro_batch: sequences per micro-batch; seq_len <= config.max_seq_len; slots >= 1.
  // tp: this rank's tensor-parallel group (size 1 without TP). Both must outlive the model.
  Gpt2Model(const ModelConfig& config, Backend& backend, ProcessGroup& tp, StageRange stage, int micro_batch,
            int seq_len, int slots);

  const ModelConfig& config() const { return config_; }
  const StageRange& stage() const { return stage_; }
  std::vector<LocalParam>& params() { return params_; }
  const LocalParam* find_param(const std::string& name) const;
  // Every local parameter (and gradient) back to back, in params() order.
  Tensor flat_params() const { return flat_params_; }
  Tensor flat_grads() const { return flat_grads_; }
  // The compute copies back to back (the same tensor as flat_params() with f32 compute).
  Tensor flat_compute_params() const { return flat_compute_; }
  bool has_compute_copy() const { return flat_compute_.data() != flat_params_.data(); }
  // Rewrites the compute copies from the master weights (rounding to bf16); nothing with f32 compute. Call after
  // anything but the optimizer's fused update writes master weights (initialization does it itself).
  void refresh_compute_params();

  // Layout-independent initialization (core/init.h): a function of seed and global position only.
  void init_parameters(uint64_t seed);
  void zero_grads();

  // Inputs of a slot, filled by the caller: tokens[B*T] (first stage), targets[B*T] (last stage),
  // stage_input[B,T,C] (stages after the first: the previous stage's output).
  Tensor tokens(int slot) const;
  Tensor targets(int slot) const;
  Tensor stage_input(int slot) const;

  // Runs this stage on the micro-batch in `slot`. On the last stage also computes per-token losses and, when
  // train is true, the gradient of d_scale * sum(losses) through the head (the rest in backward()).
  void forward(int slot, bool train, float d_scale);
  // The last stage's per-token losses [B*T] (f32) of `slot`, after forward; valid until the slot's next forward.
  Tensor losses(int slot) const;
  // [B,T,C] output of this stage (not on the last stage), after forward.
  Tensor stage_output(int slot) const;
  // Backward through this stage. d_output: gradient of the loss w.r.t. stage_output(slot) (ignored on the
  // last stage, which starts from its own loss). Parameter gradients accumulate.
  void backward(int slot, Tensor d_output);
  // Called by backward() with a block's global index right after that block's backward, and with -1 at the
  // end of backward() (after the embedding's, on the first stage). The DP gradient sync (parallel/grad_sync.h)
  // starts its buckets from it. Empty (the default): no calls.
  void set_backward_hook(std::function<void(int layer)> hook) { backward_hook_ = std::move(hook); }
  // [B,T,C] gradient w.r.t. stage_input after backward (stages after the first); valid until the next backward.
  Tensor stage_input_grad() const;

  // The gradient of the (tied) token embedding on this stage, or an undefined tensor if the stage holds none.
  // With pipeline parallelism the first stage (embedding) and the last (head) each hold a copy whose
  // gradients must be summed before the update.
  Tensor embedding_grad() const { return wte_ >= 0 ? grad(wte_) : Tensor(); }
  int slots() const { return slots_; }
  int micro_batch() const { return micro_batch_; }
  int seq_len() const { return seq_len_; }

 private:
  struct LayerParams {
    int ln1_weight, ln1_bias, qkv_weight, qkv_bias, attn_proj_weight, attn_proj_bias;
    int ln2_weight, ln2_bias, fc_weight, fc_bias, mlp_proj_weight, mlp_proj_bias;
  };
  struct LayerActs {  // arena handles
    int ln1, ln1_mean, ln1_rstd, qkv, atty, lse, res2, ln2, ln2_mean, ln2_rstd, fch, fch_gelu, res3;
  };
  struct SlotActs {
    int tokens, targets, input, lnf, lnf_mean, lnf_rstd, losses, d_lnf;
    std::vector<LayerActs> layers;
  };

  Tensor act(int handle) const { return arena_.get(handle); }
  // The compute copy forward and backward read.
  Tensor value(int param) const { return params_[param].compute; }
  Tensor grad(int param) const { return params_[param].grad; }
  // The residual stream entering local layer i (0-based within the stage) of a slot.
  Tensor layer_input(int slot, int i) const;
  void all_reduce_tp(Tensor t, ReduceOp op);

  // Layer i's forward. Layer 0 of the stage starts with its ln1; later layers find theirs already computed by
  // the previous layer's fused residual + LayerNorm (as the head finds lnf).
  void layer_forward(int slot, int i);
  void layer_backward(int slot, int i);

  ModelConfig config_;
  Backend& backend_;
  ProcessGroup& tp_;
  StageRange stage_;
  int micro_batch_, seq_len_, slots_;
  int C_, local_heads_, local_C_, vocab_rows_;
  int64_t vocab_start_, valid_vocab_;

  std::vector<LocalParam> params_;
  int wte_ = -1, wpe_ = -1, lnf_weight_ = -1, lnf_bias_ = -1;
  std::vector<LayerParams> layer_params_;
  Buffer param_buffer_, grad_buffer_, compute_buffer_;
  Tensor flat_params_, flat_grads_, flat_compute_;

  TensorArena arena_;
  std::vector<SlotActs> slot_acts_;
  std::function<void(int layer)> backward_hook_;
  // Shared scratch: logits and cross-entropy statistics, and backward temporaries.
  int logits_, row_max_, row_stats_, d_res_, d_ln_, d_big_, d_atty_;
};

}  // namespace tessera

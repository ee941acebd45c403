// Gpt2Model: one rank's shard of a GPT-2 model (pre-LayerNorm blocks with biases, learned position embedding,
// GELU-tanh MLP of 4 C, output head tied to the token embedding), behind the Model seam (parallel/model.h).
//
// Tensor parallelism is Megatron's, through the layers of parallel/tensor_parallel.h: in each block QKV and
// MLP-fc are column-parallel (each rank owns whole heads / a slice of the hidden units), attention-proj and
// MLP-proj row-parallel; the embedding and the tied head are vocab-parallel, and the cross-entropy combines row
// statistics across ranks, never gathering the logits. With sequence parallelism (Note [Sequence parallelism] in
// parallel/tensor_parallel.h) the LayerNorms and the residual stream hold this TP rank's chunk of the tokens.
#pragma once

#include <string>
#include <vector>

#include "core/model_config.h"
#include "core/param_spec.h"
#include "core/tensor_arena.h"
#include "models/arena_plan.h"
#include "parallel/model.h"
#include "parallel/process_group.h"
#include "parallel/tensor_parallel.h"

namespace tessera {

// Every parameter of a GPT-2 model, in the fixtures' order: wte, wpe, h.<l>.{ln1, attn.qkv, attn.proj, ln2,
// mlp.fc, mlp.proj}.{weight,bias}, lnf.{weight,bias}. The output head is tied to wte.
std::vector<ParamSpec> gpt2_param_specs(const ModelConfig& config);
// What GPT-2 cannot be with this shape (an untied head, grouped-query attention), one line each.
std::vector<std::string> gpt2_shape_problems(const ModelConfig& config, int tp);
// Multi-head attention (n_kv_head = n_head), an MLP of 4 * n_embd, the tied embedding.
void gpt2_fill_defaults(ModelConfig& config, bool tie_set);
// The bytes Gpt2Model's training arena plans for this stage shape (models/arena_plan.h), without building it.
size_t gpt2_train_arena_bytes(const ModelConfig& config, const ArenaPlanShape& shape);

class Gpt2Model final : public Model {
 public:
  // micro_batch: sequences per micro-batch; seq_len <= config.max_seq_len; slots >= 1 (1 for inference,
  // Note [Inference plan] in parallel/model.h). tp: this rank's tensor-parallel group (size 1 without TP). Both
  // must outlive the model.
  Gpt2Model(const ModelConfig& config, Backend& backend, ProcessGroup& tp, StageRange stage, int micro_batch,
            int seq_len, int slots, ModelUse use = ModelUse::kTrain);

  Tensor tokens(int slot) const override;
  Tensor targets(int slot) const override;
  Tensor stage_input(int chunk, int slot) const override;
  Tensor loss_weights(int slot) const override;
  void forward(int chunk, int slot, bool train, float d_scale) override;
  Tensor forward_logits(int slot) override;
  Tensor losses(int slot) const override;
  Tensor stage_output(int chunk, int slot) const override;
  void backward(int chunk, int slot, Tensor d_output) override;
  Tensor stage_input_grad() const override;
  Tensor decode(int position, int n_new) override;
  size_t arena_bytes() const override { return arena_.bytes(); }

 private:
  struct LayerParams {
    int ln1_weight, ln1_bias, qkv_weight, qkv_bias, attn_proj_weight, attn_proj_bias;
    int ln2_weight, ln2_bias, fc_weight, fc_bias, mlp_proj_weight, mlp_proj_bias;
  };
  struct LayerActs {  // arena handles
    int ln1, ln1_mean, ln1_rstd, qkv, atty, lse, res2, ln2, ln2_mean, ln2_rstd, fch, fch_gelu, res3;
  };
  struct SlotActs {
    int tokens, targets, input, lnf, lnf_mean, lnf_rstd, losses, d_lnf, loss_weights;
    std::vector<LayerActs> layers;
  };

  Tensor act(int handle) const { return arena_.get(handle); }
  // The sequence-parallel layers' buffers (Note [Sequence parallelism]); empty without sequence parallelism.
  SequenceParallelScratch scratch() const;
  // The residual stream entering block i (0-based within the chunk that runs in the slot) of a slot.
  Tensor layer_input(int slot, int i) const;
  // The chunk's blocks (after the embedding on the first stage's chunk 0) and, on the last stage's last chunk,
  // the final LayerNorm into the slot's lnf (the head's input).
  void blocks_forward(int chunk, int slot);
  // Block i (of the chunk)'s forward. Block 0 of a chunk starts with its ln1; later blocks find theirs already
  // computed by the previous block's fused residual + LayerNorm (as the head finds lnf).
  void layer_forward(int chunk, int slot, int i);
  void layer_backward(int chunk, int slot, int i);
  // Refills the shared buffers of a recomputed block i from what the slot stored (Note [Recomputation]).
  void layer_recompute(int chunk, int slot, int i);
  // Plans slot_acts_ and the shared buffers into `arena` and sets activation_memory_'s slot and shared bytes;
  // recompute false plans as ModelConfig::recompute kNone.
  void plan_activations(TensorArena& arena, bool recompute);
  // Layer i's forward on the n_new tokens in front of slot 0's buffers, over its key/value cache; x [B*n_new, C]
  // is its input, and its output is left in front of the layer's res3.
  void layer_decode(int i, Tensor x, int position, int n_new);

  ProcessGroup& tp_;
  ColumnParallelLinear column_;
  RowParallelLinear row_;
  VocabParallelEmbedding embedding_;
  VocabParallelCrossEntropy cross_entropy_;
  int C_, local_heads_, local_C_;

  int wte_ = -1, wpe_ = -1, lnf_weight_ = -1, lnf_bias_ = -1;
  std::vector<LayerParams> layer_params_;

  TensorArena arena_;
  std::vector<SlotActs> slot_acts_;
  // Shared scratch: logits and cross-entropy statistics, backward temporaries, and with sequence parallelism the
  // [B*T, C] buffers of its layers (-1 without).
  int logits_, row_max_, row_stats_, d_res_, d_ln_, d_big_, d_atty_, sp_gathered_, sp_partial_;
  // Inference: per local layer, its K and V caches [B, seq_len, local heads, head size].
  std::vector<int> k_cache_, v_cache_;
};

}  // namespace tessera

// LlamaModel: one rank's shard of a Llama-family model behind the Model seam (parallel/model.h): no biases,
// RMSNorm before each block half and at the end, rotary positions (RoPE, rotate-half, rope_theta) on queries and
// keys, grouped-query attention (n_kv_head key/value heads; query head h reads kv head h / (n_head / n_kv_head)),
// a SwiGLU MLP of ffn_hidden units, and an output head of its own (lm_head) unless tie_embeddings.
//
// Tensor parallelism (parallel/tensor_parallel.h): Q, K and V are column-parallel by heads — rank r of tp holds
// query heads [r H/tp, (r+1) H/tp) and key/value heads [r KV/tp, (r+1) KV/tp), so every query head finds its
// kv head on its own rank (tp must divide n_kv_head) — and their three weights, adjacent in the flat buffer,
// are one GEMM; gate and up are column-parallel by hidden units, likewise one GEMM; o and down are row-parallel.
// The embedding and the head are vocab-parallel, as for GPT-2. With sequence parallelism (Note [Sequence
// parallelism] in parallel/tensor_parallel.h) the RMSNorms and the residual stream hold this TP rank's chunk of
// the tokens.
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

// Every parameter, in the fixtures' order: wte, h.<l>.{attn_norm, attn.q, attn.k, attn.v, attn.o, mlp_norm,
// mlp.gate, mlp.up, mlp.down}.weight, norm.weight, and lm_head.weight unless the head is tied to wte.
std::vector<ParamSpec> llama_param_specs(const ModelConfig& config);
// What this shape cannot be split into with tp ranks, or cannot be at all, one line each.
std::vector<std::string> llama_shape_problems(const ModelConfig& config, int tp);
// Multi-head attention unless n_kv_head is set; SwiGLU of 8/3 * n_embd rounded up to a multiple of 16 (about
// the 4 * n_embd MLP's parameter count); a separate output head unless tie_embeddings is set.
void llama_fill_defaults(ModelConfig& config, bool tie_set);
// The bytes LlamaModel's training arena plans for this stage shape (models/arena_plan.h), without building it.
size_t llama_train_arena_bytes(const ModelConfig& config, const ArenaPlanShape& shape);

class LlamaModel final : public Model {
 public:
  // As Gpt2Model's.
  LlamaModel(const ModelConfig& config, Backend& backend, ProcessGroup& tp, StageRange stage, int micro_batch,
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
    int attn_norm, q, o, mlp_norm, gate, down;  // k, v follow q; up follows gate (fused GEMMs)
  };
  struct LayerActs {  // arena handles
    int xn1, rstd1, qkv, atty, lse, res2, xn2, rstd2, gate_up, hidden, res3;
  };
  struct SlotActs {
    int tokens, targets, input, xnf, rstdf, losses, d_xnf, loss_weights;
    std::vector<LayerActs> layers;
  };

  Tensor act(int handle) const { return arena_.get(handle); }
  // The sequence-parallel layers' buffers; empty without sequence parallelism.
  SequenceParallelScratch scratch() const;
  Tensor layer_input(int slot, int i) const;
  void blocks_forward(int chunk, int slot);
  void layer_forward(int chunk, int slot, int i);
  void layer_backward(int chunk, int slot, int i);
  // As Gpt2Model's: refills a recomputed layer's shared buffers, and plans the activations.
  void layer_recompute(int chunk, int slot, int i);
  void plan_activations(TensorArena& arena, bool recompute);
  // As Gpt2Model::layer_decode: RoPE at positions [position, position + n_new), grouped-query attention over the
  // layer's cache of local_kv_heads_ heads.
  void layer_decode(int i, Tensor x, int position, int n_new);
  // The output head's weight: lm_head, or wte when tied.
  int head() const { return lm_head_ >= 0 ? lm_head_ : wte_; }

  ProcessGroup& tp_;
  ColumnParallelLinear column_;
  RowParallelLinear row_;
  VocabParallelEmbedding embedding_;
  VocabParallelCrossEntropy cross_entropy_;
  int C_, hs_, local_heads_, local_kv_heads_, local_ffn_;

  int wte_ = -1, norm_ = -1, lm_head_ = -1;
  std::vector<LayerParams> layer_params_;

  TensorArena arena_;
  std::vector<SlotActs> slot_acts_;
  // Shared scratch: logits and cross-entropy statistics, and backward temporaries.
  int logits_, row_max_, row_stats_, d_res_, d_ln_, d_big_, d_hidden_, d_atty_;
  // With sequence parallelism, the [B*T, C] buffers of its layers (Note [Sequence parallelism]); -1 without.
  int sp_gathered_, sp_partial_;
  // Inference: per local layer, its K and V caches [B, seq_len, local kv heads, head size].
  std::vector<int> k_cache_, v_cache_;
};

}  // namespace tessera

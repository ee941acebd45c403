// Llama stage shard: parameters, activation plan, forward and backward.
#include "models/llama/llama_model.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/check.h"

namespace tessera {

std::vector<ParamSpec> llama_param_specs(const ModelConfig& config) {
  const int64_t C = config.n_embd, V = config.vocab_size, F = config.ffn_hidden;
  const int64_t kv = static_cast<int64_t>(config.n_kv_head) * config.head_size();
  const float std_dev = config.init_std;
  // Output projections feed the residual stream once per block half: scaled down as in GPT-2.
  const float residual_std = config.init_std / std::sqrt(2.0f * config.n_layer);
  std::vector<ParamSpec> specs;
  auto add = [&](std::string name, std::vector<int64_t> shape, int layer, ParamPlace place, int split_dim) {
    ParamSpec spec;
    spec.name = std::move(name);
    spec.shape = std::move(shape);
    spec.layer = layer;
    spec.place = place;
    spec.tp_split_dim = split_dim;
    if (spec.shape.size() == 2) {
      spec.weight_decay = true;
      spec.init = InitKind::kNormal;
      spec.init_std = std_dev;
    } else {
      spec.init = InitKind::kOnes;  // RMSNorm gains
    }
    specs.push_back(spec);
    return &specs.back();
  };
  ParamSpec* wte = add("wte", {V, C}, -1, ParamPlace::kInput, 0);
  wte->vocab_parallel = true;
  wte->tied_across_stages = config.tie_embeddings;
  for (int l = 0; l < config.n_layer; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    // The RMSNorms' weights: per token, in the sequence-parallel region.
    add(h + "attn_norm.weight", {C}, l, ParamPlace::kBlock, -1)->sequence_parallel_grad = true;
    // Column-parallel by heads: rank r holds whole query heads and whole key/value heads.
    add(h + "attn.q.weight", {C, C}, l, ParamPlace::kBlock, 0);
    add(h + "attn.k.weight", {kv, C}, l, ParamPlace::kBlock, 0);
    add(h + "attn.v.weight", {kv, C}, l, ParamPlace::kBlock, 0);
    // Row-parallel: Y = sum_r X_r O_r^T, O split by columns (the heads' channels).
    add(h + "attn.o.weight", {C, C}, l, ParamPlace::kBlock, 1)->init_std = residual_std;
    add(h + "mlp_norm.weight", {C}, l, ParamPlace::kBlock, -1)->sequence_parallel_grad = true;
    add(h + "mlp.gate.weight", {F, C}, l, ParamPlace::kBlock, 0);
    add(h + "mlp.up.weight", {F, C}, l, ParamPlace::kBlock, 0);
    add(h + "mlp.down.weight", {C, F}, l, ParamPlace::kBlock, 1)->init_std = residual_std;
  }
  add("norm.weight", {C}, -1, ParamPlace::kOutput, -1)->sequence_parallel_grad = true;
  if (!config.tie_embeddings) add("lm_head.weight", {V, C}, -1, ParamPlace::kOutput, 0)->vocab_parallel = true;
  return specs;
}

std::vector<std::string> llama_shape_problems(const ModelConfig& config, int tp) {
  std::vector<std::string> problems;
  const int H = config.n_head, KV = config.n_kv_head;
  if (KV <= 0 || H % KV != 0) {
    problems.push_back(str_cat("model.n_kv_head (", KV, ") must divide model.n_head (", H,
                               "): each key/value head serves n_head / n_kv_head query heads"));
  } else if (KV % tp != 0) {
    problems.push_back(str_cat("model.n_kv_head (", KV, ") must be divisible by parallel.tp (", tp,
                               "): each tensor-parallel rank holds whole key/value heads and the query heads that "
                               "read them; choose parallel.tp dividing ",
                               KV));
  }
  if (config.head_size() % 2 != 0) {
    problems.push_back(
        str_cat("model.n_embd / model.n_head (", config.head_size(), ") must be even: RoPE rotates pairs of channels"));
  }
  if (config.ffn_hidden <= 0 || config.ffn_hidden % tp != 0) {
    problems.push_back(str_cat("model.ffn_hidden (", config.ffn_hidden,
                               ") must be positive and divisible by parallel.tp (", tp,
                               "): each rank holds a slice of the MLP's hidden units"));
  }
  if (!(config.rope_theta > 0) || !std::isfinite(config.rope_theta)) {
    problems.push_back(str_cat("model.rope_theta (", config.rope_theta, ") must be positive"));
  }
  return problems;
}

void llama_fill_defaults(ModelConfig& config, bool tie_set) {
  if (config.n_kv_head == 0) config.n_kv_head = config.n_head;
  if (config.ffn_hidden == 0) config.ffn_hidden = (8 * config.n_embd / 3 + 15) / 16 * 16;
  if (!tie_set) config.tie_embeddings = false;
}

LlamaModel::LlamaModel(const ModelConfig& config, Backend& backend, ProcessGroup& tp, StageRange stage, int micro_batch,
                       int seq_len, int slots, ModelUse use)
    : Model(config, backend, tp, stage, micro_batch, seq_len, slots, llama_param_specs(config), use),
      tp_(tp),
      column_(backend, tp, sequence_parallel_),
      row_(backend, tp, sequence_parallel_),
      embedding_(backend, tp, vocab_start_, sequence_parallel_),
      cross_entropy_(backend, tp, vocab_start_, valid_vocab_) {
  const int tp_size = tp.size();
  TS_ASSERT(llama_shape_problems(config, tp_size).empty() && config.n_head % tp_size == 0, "llama shape over tp ",
            tp_size);
  C_ = config.n_embd;
  hs_ = config.head_size();
  local_heads_ = config.n_head / tp_size;
  local_kv_heads_ = config.n_kv_head / tp_size;
  local_ffn_ = config.ffn_hidden / tp_size;

  // ---- the parameters' places in params() ----
  if (stage.has_embedding || config.tie_embeddings) {
    if (find_param("wte") != nullptr) wte_ = param_index("wte");
  }
  if (stage.has_head) {
    norm_ = param_index("norm.weight");
    if (!config.tie_embeddings) lm_head_ = param_index("lm_head.weight");
  }
  for (int l = 0; l < config.n_layer; ++l) {  // in local order: chunk by chunk, increasing
    if (!stage.holds_layer(l)) continue;
    const std::string h = "h." + std::to_string(l) + ".";
    LayerParams p{};
    p.attn_norm = param_index(h + "attn_norm.weight");
    p.q = param_index(h + "attn.q.weight");
    TS_ASSERT(param_index(h + "attn.k.weight") == p.q + 1 && param_index(h + "attn.v.weight") == p.q + 2,
              "q, k, v must be adjacent");
    p.o = param_index(h + "attn.o.weight");
    p.mlp_norm = param_index(h + "mlp_norm.weight");
    p.gate = param_index(h + "mlp.gate.weight");
    TS_ASSERT(param_index(h + "mlp.up.weight") == p.gate + 1, "gate, up must be adjacent");
    p.down = param_index(h + "mlp.down.weight");
    layer_params_.push_back(p);
  }

  // ---- activations, planned once (Note [Inference plan] in parallel/model.h for an inference model) ----
  // What recompute NONE would plan, for activation_memory() (the arena is only counted, never allocated).
  if (use == ModelUse::kTrain && config.recompute != Recompute::kNone) {
    TensorArena none;
    plan_activations(none, /*recompute=*/false);
    activation_memory_.none_bytes = static_cast<int64_t>(none.bytes());
    slot_acts_.clear();
    k_cache_.clear();
    v_cache_.clear();
  }
  plan_activations(arena_, use == ModelUse::kTrain && config.recompute != Recompute::kNone);
  if (activation_memory_.none_bytes == 0) activation_memory_.none_bytes = activation_memory_.total();
  arena_.allocate(backend);
}

// Recomputation works as in Gpt2Model (Note [Recomputation] in models/gpt2/gpt2_model.cc):
//   SELECTIVE: per slot xn1 (+ rstd), qkv (after RoPE), res2, xn2 (+ rstd), gate_up, res3; shared atty, lse
//     (attention_forward of the stored qkv) and hidden (swiglu_forward of the stored gate_up, a kernel of its own
//     in the forward too).
//   FULL: per slot only res3; shared everything else, recomputed from the block's input up to hidden. xn1 of a
//     block after the first is rmsnorm_forward of the stored sum, as the fused residual + RMSNorm computed it.
void LlamaModel::plan_activations(TensorArena& arena, bool recompute) {
  const bool train = use_ == ModelUse::kTrain;
  const DType A = config_.dtype;  // compute dtype
  const int64_t B = micro_batch_, T = seq_len_, BT = B * T, C = C_;
  const int64_t qkv_width = static_cast<int64_t>(local_heads_ + 2 * local_kv_heads_) * hs_;
  const int64_t att_width = static_cast<int64_t>(local_heads_) * hs_;
  const int64_t Fl = local_ffn_;
  // Rows of the norm and residual activations: this TP rank's chunk with sequence parallelism (Note [Sequence
  // parallelism] in parallel/tensor_parallel.h), else all B*T. Attention and the MLP's hidden layer see all rows.
  const int64_t R = stage_rows();
  const bool full = recompute && config_.recompute == Recompute::kFull;
  // The buffers every recomputed block shares; -1 where a block keeps its own.
  LayerActs shared{-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
  bool any_recomputed = false;
  const int slot_layers = stage_.max_chunk_layers();  // every slot serves every chunk
  for (int j = 0; j < slot_layers; ++j) any_recomputed |= recompute && slot_layer_recomputed(j);
  const size_t shared_begin = arena.bytes();
  if (any_recomputed) {
    if (full) {
      shared.xn1 = arena.reserve(A, {R, C});
      shared.rstd1 = arena.reserve(DType::kF32, {R});
      shared.qkv = arena.reserve(A, {B, T, qkv_width});
      shared.res2 = arena.reserve(A, {R, C});
      shared.xn2 = arena.reserve(A, {R, C});
      shared.rstd2 = arena.reserve(DType::kF32, {R});
      shared.gate_up = arena.reserve(A, {BT, 2 * Fl});
    }
    shared.atty = arena.reserve(A, {BT, att_width});
    shared.lse = arena.reserve(DType::kF32, {B, local_heads_, T});
    shared.hidden = arena.reserve(A, {BT, Fl});
  }
  int64_t shared_bytes = static_cast<int64_t>(arena.bytes() - shared_begin);
  int64_t slot_bytes = 0;
  auto own = [&](int shared_handle, bool recomputed, DType dtype, std::initializer_list<int64_t> shape) {
    return recomputed && shared_handle >= 0 ? shared_handle : arena.reserve(dtype, shape);
  };
  for (int s = 0; s < slots_; ++s) {
    const size_t slot_begin = arena.bytes();
    SlotActs a{};
    a.tokens = arena.reserve(DType::kI32, {BT});
    a.targets = train ? arena.reserve(DType::kI32, {BT}) : -1;
    a.input = arena.reserve(A, {R, C});
    for (int j = 0; j < slot_layers; ++j) {
      if (!train && !a.layers.empty()) {  // inference: every layer reuses the first one's buffers
        a.layers.push_back(a.layers.front());
        continue;
      }
      const bool r = recompute && slot_layer_recomputed(j);
      LayerActs la{};
      la.xn1 = own(shared.xn1, r, A, {R, C});
      la.rstd1 = own(shared.rstd1, r, DType::kF32, {R});
      la.qkv = own(shared.qkv, r, A, {B, T, qkv_width});
      la.atty = own(shared.atty, r, A, {BT, att_width});
      la.lse = own(shared.lse, r, DType::kF32, {B, local_heads_, T});
      la.res2 = own(shared.res2, r, A, {R, C});
      la.xn2 = own(shared.xn2, r, A, {R, C});
      la.rstd2 = own(shared.rstd2, r, DType::kF32, {R});
      la.gate_up = own(shared.gate_up, r, A, {BT, 2 * Fl});
      la.hidden = own(shared.hidden, r, A, {BT, Fl});
      la.res3 = arena.reserve(A, {R, C});
      a.layers.push_back(la);
    }
    if (stage_.has_head) {
      a.xnf = arena.reserve(A, {R, C});
      a.rstdf = arena.reserve(DType::kF32, {R});
      a.losses = train ? arena.reserve(DType::kF32, {BT}) : -1;
      a.d_xnf = train ? arena.reserve(A, {R, C}) : -1;
    }
    slot_acts_.push_back(std::move(a));
    slot_bytes += static_cast<int64_t>(arena.bytes() - slot_begin);
  }
  const size_t rest_begin = arena.bytes();
  logits_ = stage_.has_head ? arena.reserve(A, {BT, vocab_rows_}) : -1;
  if (train) {
    row_max_ = arena.reserve(DType::kF32, {BT});
    row_stats_ = arena.reserve(DType::kF32, {2, BT});  // sum_exp, target_logit: one all-reduce for both
    d_res_ = arena.reserve(A, {R, C});
    d_ln_ = arena.reserve(A, {R, C});
    d_big_ = arena.reserve(A, {BT * std::max<int64_t>(2 * Fl, qkv_width)});  // d(gate_up) or d(qkv)
    d_hidden_ = arena.reserve(A, {BT, Fl});
    d_atty_ = arena.reserve(A, {BT, att_width});
    sp_gathered_ = sequence_parallel_ ? arena.reserve(A, {BT, C}) : -1;
    sp_partial_ = sequence_parallel_ ? arena.reserve(A, {BT, C}) : -1;
  } else {
    row_max_ = row_stats_ = d_res_ = d_ln_ = d_big_ = d_hidden_ = d_atty_ = sp_gathered_ = sp_partial_ = -1;
    for (int j = 0; j < stage_.layer_count(); ++j) {
      k_cache_.push_back(arena.reserve(A, {B, T, local_kv_heads_, hs_}));
      v_cache_.push_back(arena.reserve(A, {B, T, local_kv_heads_, hs_}));
    }
  }
  shared_bytes += static_cast<int64_t>(arena.bytes() - rest_begin);
  // Planned after everything else, so the other activations keep the places they had before loss weights.
  const size_t weights_begin = arena.bytes();
  for (SlotActs& a : slot_acts_) a.loss_weights = train && stage_.has_head ? arena.reserve(DType::kF32, {BT}) : -1;
  slot_bytes += static_cast<int64_t>(arena.bytes() - weights_begin);
  activation_memory_.slot_bytes = slot_bytes;
  activation_memory_.shared_bytes = shared_bytes;
}

Tensor LlamaModel::tokens(int slot) const { return act(slot_acts_[slot].tokens); }
Tensor LlamaModel::loss_weights(int slot) const {
  TS_ASSERT(use_ == ModelUse::kTrain && stage_.has_head,
            "loss weights on a stage without the head or of an inference model");
  return act(slot_acts_[slot].loss_weights);
}
Tensor LlamaModel::targets(int slot) const {
  TS_ASSERT(use_ == ModelUse::kTrain, "targets of an inference model");
  return act(slot_acts_[slot].targets);
}
Tensor LlamaModel::stage_input(int /*chunk*/, int slot) const { return act(slot_acts_[slot].input); }

Tensor LlamaModel::layer_input(int slot, int i) const {
  return i == 0 ? act(slot_acts_[slot].input) : act(slot_acts_[slot].layers[i - 1].res3);
}

Tensor LlamaModel::stage_output(int chunk, int slot) const {
  return layer_input(slot, chunk_layers(chunk)).view({stage_rows(), C_});
}

SequenceParallelScratch LlamaModel::scratch() const {
  if (!sequence_parallel_) return {};
  return {act(sp_gathered_), act(sp_partial_)};
}

Tensor LlamaModel::stage_input_grad() const {
  TS_ASSERT(use_ == ModelUse::kTrain, "stage_input_grad of an inference model");
  return act(d_res_);
}

Tensor LlamaModel::losses(int slot) const {
  TS_ASSERT(stage_.has_head && use_ == ModelUse::kTrain, "losses on a stage without the head or of an inference model");
  return act(slot_acts_[slot].losses);
}

void LlamaModel::blocks_forward(int chunk, int slot) {
  const SlotActs& a = slot_acts_[slot];
  if (embedding_chunk(chunk)) {
    embedding_.forward(act(a.input), act(a.tokens), value(wte_), Tensor(), seq_len_, scratch());
  }
  const int n_local = chunk_layers(chunk);
  for (int i = 0; i < n_local; ++i) layer_forward(chunk, slot, i);
  if (head_chunk(chunk) && n_local == 0) {  // a head-only chunk: no layer's fused residual + RMSNorm made it
    backend_.rmsnorm_forward(act(a.xnf), act(a.rstdf), layer_input(slot, 0), value(norm_), config_.norm_eps);
  }
}

void LlamaModel::forward(int chunk, int slot, bool train, float d_scale) {
  TS_ASSERT(use_ == ModelUse::kTrain, "forward with losses of an inference model: use forward_logits or decode");
  const SlotActs& a = slot_acts_[slot];
  blocks_forward(chunk, slot);
  if (!head_chunk(chunk)) return;
  // logits[:, vocab shard] = norm(x) head_shard^T (column-parallel over the vocabulary).
  const Tensor logits = act(logits_);
  column_.forward(logits, act(a.xnf), value(head()), Tensor(), scratch());
  cross_entropy_.forward_backward(act(a.losses), logits, act(a.targets),
                                  loss_weighting_ ? act(a.loss_weights) : Tensor(), d_scale, act(row_max_),
                                  act(row_stats_));
  if (!train) return;
  // The head's backward now, while the logits are at hand (as in Gpt2Model::forward).
  column_.backward(act(a.d_xnf), grad(head()), Tensor(), logits, act(a.xnf), value(head()), scratch());
}

Tensor LlamaModel::forward_logits(int slot) {
  blocks_forward(0, slot);
  if (!stage_.has_head) return Tensor();
  const Tensor logits = act(logits_);
  column_.forward(logits, act(slot_acts_[slot].xnf), value(head()), Tensor(), scratch());
  return logits;
}

Tensor LlamaModel::decode(int position, int n_new) {
  TS_ASSERT(use_ == ModelUse::kInference && position >= 0 && n_new >= 1 && position + n_new <= seq_len_,
            "decode of positions [", position, ", ", position + n_new, ") with a ", seq_len_, "-position ",
            use_ == ModelUse::kTrain ? "training model" : "cache");
  const int64_t N = static_cast<int64_t>(micro_batch_) * n_new;
  const SlotActs& a = slot_acts_[0];
  Tensor x = decode_input(n_new).view({N, C_});
  if (stage_.has_embedding) embedding_.forward(x, decode_tokens(n_new), value(wte_), Tensor(), n_new);
  const int n_local = stage_.layer_count();
  for (int i = 0; i < n_local; ++i) {
    layer_decode(i, x, position, n_new);
    x = act(a.layers[i].res3).front({N, C_});
  }
  if (!stage_.has_head) return x.view({micro_batch_, n_new, C_});
  const Tensor xnf = act(a.xnf).front({N, C_});
  backend_.rmsnorm_forward(xnf, act(a.rstdf).front({N}), x, value(norm_), config_.norm_eps);
  const Tensor logits = act(logits_).front({N, vocab_rows_});
  column_.forward(logits, xnf, value(head()), Tensor());
  return logits;
}

void LlamaModel::layer_decode(int i, Tensor x, int position, int n_new) {
  const LayerParams& p = layer_params_[i];
  const LayerActs& a = slot_acts_[0].layers[i];
  const int64_t N = static_cast<int64_t>(micro_batch_) * n_new, C = C_;
  const int64_t qkv_width = static_cast<int64_t>(local_heads_ + 2 * local_kv_heads_) * hs_;
  const float eps = config_.norm_eps;
  // Attention half: x + o(attention over the cache of rope(q, k), v), q k v of rmsnorm(x).
  const Tensor xn1 = act(a.xn1).front({N, C});
  backend_.rmsnorm_forward(xn1, act(a.rstd1).front({N}), x, value(p.attn_norm), eps);
  const Tensor qkv = act(a.qkv).front({micro_batch_, n_new, qkv_width});
  column_.forward(qkv, xn1, fused_value(p.q, 3), Tensor());
  backend_.rope_forward_at(qkv, local_heads_, local_kv_heads_, n_new, position, config_.rope_theta);
  const Tensor atty = act(a.atty).front({N, static_cast<int64_t>(local_heads_) * hs_});
  backend_.cached_attention_forward(atty, qkv, act(k_cache_[i]), act(v_cache_[i]), local_heads_, local_kv_heads_,
                                    position);
  const Tensor res2 = act(a.res2).front({N, C});
  row_.forward(res2, atty, value(p.o), Tensor());
  const Tensor xn2 = act(a.xn2).front({N, C});
  backend_.residual_rmsnorm_forward(res2, xn2, act(a.rstd2).front({N}), res2, x, value(p.mlp_norm), eps);
  // MLP half: res2 + down(silu(gate(y)) * up(y)). res3 may be x's own buffer (the layers share theirs): x is dead.
  const Tensor gate_up = act(a.gate_up).front({N, 2 * static_cast<int64_t>(local_ffn_)});
  column_.forward(gate_up, xn2, fused_value(p.gate, 2), Tensor());
  const Tensor hidden = act(a.hidden).front({N, static_cast<int64_t>(local_ffn_)});
  backend_.swiglu_forward(hidden, gate_up);
  const Tensor res3 = act(a.res3).front({N, C});
  row_.forward(res3, hidden, value(p.down), Tensor());
  backend_.add(res3, res3, res2);
}

void LlamaModel::layer_forward(int chunk, int slot, int i) {
  const LayerParams& p = layer_params_[chunk_begin(chunk) + i];
  const LayerActs& a = slot_acts_[slot].layers[i];
  const Tensor x = layer_input(slot, i);
  const float eps = config_.norm_eps;
  // Attention half: x + o(attention(rope(q, k), v)), q k v of rmsnorm(x).
  if (i == 0) backend_.rmsnorm_forward(act(a.xn1), act(a.rstd1), x, value(p.attn_norm), eps);
  column_.forward(act(a.qkv), act(a.xn1), fused_value(p.q, 3), Tensor(), scratch());
  backend_.rope_forward(act(a.qkv), local_heads_, local_kv_heads_, seq_len_, config_.rope_theta);
  backend_.attention_forward(act(a.atty), act(a.lse), act(a.qkv), local_heads_, local_kv_heads_);
  row_.forward(act(a.res2), act(a.atty), value(p.o), Tensor(), scratch());
  // res2 = x + attention output, and the MLP's RMSNorm of it, in one pass.
  backend_.residual_rmsnorm_forward(act(a.res2), act(a.xn2), act(a.rstd2), act(a.res2), x, value(p.mlp_norm), eps);
  // MLP half: res2 + down(silu(gate(y)) * up(y)), y = rmsnorm(res2).
  column_.forward(act(a.gate_up), act(a.xn2), fused_value(p.gate, 2), Tensor(), scratch());
  backend_.swiglu_forward(act(a.hidden), act(a.gate_up));
  row_.forward(act(a.res3), act(a.hidden), value(p.down), Tensor(), scratch());
  // res3 = res2 + MLP output, fused with the RMSNorm that reads it next, within the chunk only (the next chunk's
  // first block runs on another rank).
  if (i + 1 < chunk_layers(chunk)) {
    const LayerActs& na = slot_acts_[slot].layers[i + 1];
    backend_.residual_rmsnorm_forward(act(a.res3), act(na.xn1), act(na.rstd1), act(a.res3), act(a.res2),
                                      value(layer_params_[chunk_begin(chunk) + i + 1].attn_norm), eps);
  } else if (head_chunk(chunk)) {
    const SlotActs& sa = slot_acts_[slot];
    backend_.residual_rmsnorm_forward(act(a.res3), act(sa.xnf), act(sa.rstdf), act(a.res3), act(a.res2), value(norm_),
                                      eps);
  } else {
    backend_.add(act(a.res3), act(a.res3), act(a.res2));
  }
}

void LlamaModel::backward(int chunk, int slot, Tensor d_output) {
  TS_ASSERT(use_ == ModelUse::kTrain, "backward of an inference model");
  const SlotActs& a = slot_acts_[slot];
  const int n_local = chunk_layers(chunk);
  const int first_layer = stage_.chunk(chunk).first;
  Tensor d_res = act(d_res_);
  if (head_chunk(chunk)) {
    backend_.fill(d_res, 0.0f);
    backend_.rmsnorm_backward(d_res, grad(norm_), act(a.d_xnf), layer_input(slot, n_local), value(norm_), act(a.rstdf));
  } else {
    backend_.copy(d_res, d_output);
  }
  for (int i = n_local - 1; i >= 0; --i) {
    if (config_.recomputes(first_layer + i)) layer_recompute(chunk, slot, i);
    layer_backward(chunk, slot, i);
    call_backward_hook(first_layer + i);
  }
  if (embedding_chunk(chunk)) embedding_.backward(grad(wte_), Tensor(), d_res, act(a.tokens), seq_len_, scratch());
  call_backward_hook(-1);
}

void LlamaModel::layer_recompute(int chunk, int slot, int i) {
  const LayerParams& p = layer_params_[chunk_begin(chunk) + i];
  const LayerActs& a = slot_acts_[slot].layers[i];
  const Tensor x = layer_input(slot, i);
  const float eps = config_.norm_eps;
  const bool full = config_.recompute == Recompute::kFull;
  // The calls of layer_forward, in its order, on the same inputs: the same bits.
  if (full) {
    backend_.rmsnorm_forward(act(a.xn1), act(a.rstd1), x, value(p.attn_norm), eps);
    column_.forward(act(a.qkv), act(a.xn1), fused_value(p.q, 3), Tensor(), scratch());
    backend_.rope_forward(act(a.qkv), local_heads_, local_kv_heads_, seq_len_, config_.rope_theta);
  }
  backend_.attention_forward(act(a.atty), act(a.lse), act(a.qkv), local_heads_, local_kv_heads_);
  if (full) {
    row_.forward(act(a.res2), act(a.atty), value(p.o), Tensor(), scratch());
    backend_.residual_rmsnorm_forward(act(a.res2), act(a.xn2), act(a.rstd2), act(a.res2), x, value(p.mlp_norm), eps);
    column_.forward(act(a.gate_up), act(a.xn2), fused_value(p.gate, 2), Tensor(), scratch());
  }
  backend_.swiglu_forward(act(a.hidden), act(a.gate_up));
}

void LlamaModel::layer_backward(int chunk, int slot, int i) {
  const LayerParams& p = layer_params_[chunk_begin(chunk) + i];
  const LayerActs& a = slot_acts_[slot].layers[i];
  const int64_t B = micro_batch_, T = seq_len_, BT = B * T;
  Tensor d_res = act(d_res_);  // gradient w.r.t. this layer's output; becomes that w.r.t. its input
  Tensor d_ln = act(d_ln_);
  Tensor d_gate_up(act(d_big_).data(), config_.dtype, backend_.device(), {BT, 2 * static_cast<int64_t>(local_ffn_)});
  Tensor d_qkv(act(d_big_).data(), config_.dtype, backend_.device(),
               {B, T, static_cast<int64_t>(local_heads_ + 2 * local_kv_heads_) * hs_});
  // MLP half.
  row_.backward(act(d_hidden_), grad(p.down), Tensor(), d_res, act(a.hidden), value(p.down), scratch());
  backend_.swiglu_backward(d_gate_up, act(d_hidden_), act(a.gate_up));
  column_.backward(d_ln, fused_grad(p.gate, 2), Tensor(), d_gate_up, act(a.xn2), fused_value(p.gate, 2), scratch());
  backend_.rmsnorm_backward(d_res, grad(p.mlp_norm), d_ln, act(a.res2), value(p.mlp_norm), act(a.rstd2));
  // Attention half.
  row_.backward(act(d_atty_), grad(p.o), Tensor(), d_res, act(a.atty), value(p.o), scratch());
  backend_.attention_backward(d_qkv, act(d_atty_), act(a.qkv), act(a.atty), act(a.lse), local_heads_, local_kv_heads_);
  backend_.rope_backward(d_qkv, local_heads_, local_kv_heads_, seq_len_, config_.rope_theta);
  column_.backward(d_ln, fused_grad(p.q, 3), Tensor(), d_qkv, act(a.xn1), fused_value(p.q, 3), scratch());
  backend_.rmsnorm_backward(d_res, grad(p.attn_norm), d_ln, layer_input(slot, i), value(p.attn_norm), act(a.rstd1));
}

}  // namespace tessera

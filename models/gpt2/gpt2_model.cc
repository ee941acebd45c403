// GPT-2 stage shard: parameters, activation plan, forward and backward.
#include "models/gpt2/gpt2_model.h"

#include <cmath>
#include <string>
#include <vector>

#include "core/check.h"

namespace tessera {

std::vector<ParamSpec> gpt2_param_specs(const ModelConfig& config) {
  const int64_t C = config.n_embd, V = config.vocab_size, T = config.max_seq_len;
  const float std_dev = config.init_std;
  // Output projections feed the residual stream once per block half: scaled down as in GPT-2.
  const float residual_std = config.init_std / std::sqrt(2.0f * config.n_layer);
  std::vector<ParamSpec> specs;
  auto matrix = [&](std::string name, std::vector<int64_t> shape, int layer, float s, int split_dim, int parts) {
    ParamSpec spec;
    spec.name = std::move(name);
    spec.shape = std::move(shape);
    spec.layer = layer;
    spec.weight_decay = true;
    spec.init = InitKind::kNormal;
    spec.init_std = s;
    spec.tp_split_dim = split_dim;
    spec.tp_split_parts = parts;
    specs.push_back(spec);
  };
  auto vector = [&](std::string name, int64_t n, int layer, InitKind init, int split_dim, int parts) {
    ParamSpec spec;
    spec.name = std::move(name);
    spec.shape = {n};
    spec.layer = layer;
    spec.init = init;
    spec.tp_split_dim = split_dim;
    spec.tp_split_parts = parts;
    specs.push_back(spec);
  };
  // A LayerNorm's weight and bias: per token, in the sequence-parallel region.
  auto norm = [&](std::string name, int layer, InitKind init) {
    vector(std::move(name), C, layer, init, -1, 1);
    specs.back().sequence_parallel_grad = true;
  };
  matrix("wte", {V, C}, -1, std_dev, 0, 1);
  specs.back().vocab_parallel = true;
  specs.back().place = ParamPlace::kInput;
  specs.back().tied_across_stages = true;  // the output head
  matrix("wpe", {T, C}, -1, std_dev, -1, 1);
  specs.back().place = ParamPlace::kInput;
  for (int l = 0; l < config.n_layer; ++l) {
    std::string h = "h." + std::to_string(l) + ".";
    norm(h + "ln1.weight", l, InitKind::kOnes);
    norm(h + "ln1.bias", l, InitKind::kZeros);
    // Column-parallel by heads: Y = X A^T, A = [A_1; ...; A_tp] by rows within each of Q, K, V.
    matrix(h + "attn.qkv.weight", {3 * C, C}, l, std_dev, 0, 3);
    vector(h + "attn.qkv.bias", 3 * C, l, InitKind::kZeros, 0, 3);
    specs.back().zero_grad_begin = C;  // the K third
    specs.back().zero_grad_end = 2 * C;
    // Row-parallel: Y = sum_r X_r A_r^T with A split by columns (input features); bias replicated.
    matrix(h + "attn.proj.weight", {C, C}, l, residual_std, 1, 1);
    vector(h + "attn.proj.bias", C, l, InitKind::kZeros, -1, 1);
    norm(h + "ln2.weight", l, InitKind::kOnes);
    norm(h + "ln2.bias", l, InitKind::kZeros);
    matrix(h + "mlp.fc.weight", {4 * C, C}, l, std_dev, 0, 1);
    vector(h + "mlp.fc.bias", 4 * C, l, InitKind::kZeros, 0, 1);
    matrix(h + "mlp.proj.weight", {C, 4 * C}, l, residual_std, 1, 1);
    vector(h + "mlp.proj.bias", C, l, InitKind::kZeros, -1, 1);
  }
  norm("lnf.weight", -1, InitKind::kOnes);
  specs.back().place = ParamPlace::kOutput;
  norm("lnf.bias", -1, InitKind::kZeros);
  specs.back().place = ParamPlace::kOutput;
  return specs;
}

std::vector<std::string> gpt2_shape_problems(const ModelConfig& config, int /*tp*/) {
  std::vector<std::string> problems;
  if (!config.tie_embeddings) {
    problems.push_back("model.tie_embeddings: GPT2's output head is its token embedding; leave it unset or true");
  }
  if (config.n_kv_head != config.n_head) {
    problems.push_back(str_cat("model.n_kv_head (", config.n_kv_head, ") applies to arch LLAMA; GPT2 has n_head (",
                               config.n_head, ") key/value heads: leave it unset"));
  }
  if (config.ffn_hidden != 4 * config.n_embd) {
    problems.push_back(str_cat("model.ffn_hidden (", config.ffn_hidden, ") applies to arch LLAMA; GPT2's MLP has 4 * ",
                               "n_embd hidden units: leave it unset"));
  }
  return problems;
}

void gpt2_fill_defaults(ModelConfig& config, bool tie_set) {
  if (config.n_kv_head == 0) config.n_kv_head = config.n_head;
  if (config.ffn_hidden == 0) config.ffn_hidden = 4 * config.n_embd;
  if (!tie_set) config.tie_embeddings = true;
}

Gpt2Model::Gpt2Model(const ModelConfig& config, Backend& backend, ProcessGroup& tp, StageRange stage, int micro_batch,
                     int seq_len, int slots, ModelUse use)
    : Model(config, backend, tp, stage, micro_batch, seq_len, slots, gpt2_param_specs(config), use),
      tp_(tp),
      column_(backend, tp, sequence_parallel_),
      row_(backend, tp, sequence_parallel_),
      embedding_(backend, tp, vocab_start_, sequence_parallel_),
      cross_entropy_(backend, tp, vocab_start_, valid_vocab_) {
  const int tp_size = tp.size();
  TS_ASSERT(config.n_head % tp_size == 0, "n_head ", config.n_head, " over tp ", tp_size);
  C_ = config.n_embd;
  local_heads_ = config.n_head / tp_size;
  local_C_ = C_ / tp_size;

  // ---- the parameters' places in params() ----
  layer_params_.resize(stage.layer_count());
  for (int i = 0; i < static_cast<int>(params().size()); ++i) {
    const std::string& n = params()[i].spec.name;
    if (n == "wte")
      wte_ = i;
    else if (n == "wpe")
      wpe_ = i;
    else if (n == "lnf.weight")
      lnf_weight_ = i;
    else if (n == "lnf.bias")
      lnf_bias_ = i;
    else {
      LayerParams& lp = layer_params_[local_layer(params()[i].spec.layer)];
      std::string field = n.substr(n.find('.', 2) + 1);
      if (field == "ln1.weight")
        lp.ln1_weight = i;
      else if (field == "ln1.bias")
        lp.ln1_bias = i;
      else if (field == "attn.qkv.weight")
        lp.qkv_weight = i;
      else if (field == "attn.qkv.bias")
        lp.qkv_bias = i;
      else if (field == "attn.proj.weight")
        lp.attn_proj_weight = i;
      else if (field == "attn.proj.bias")
        lp.attn_proj_bias = i;
      else if (field == "ln2.weight")
        lp.ln2_weight = i;
      else if (field == "ln2.bias")
        lp.ln2_bias = i;
      else if (field == "mlp.fc.weight")
        lp.fc_weight = i;
      else if (field == "mlp.fc.bias")
        lp.fc_bias = i;
      else if (field == "mlp.proj.weight")
        lp.mlp_proj_weight = i;
      else if (field == "mlp.proj.bias")
        lp.mlp_proj_bias = i;
      else
        TS_ASSERT(false, "unexpected parameter ", n);
    }
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

// Note [Recomputation]
// With train.recompute (ModelConfig::recompute), a recomputed block keeps per slot only what its recomputation
// reads; the rest of its LayerActs are handles into ONE set of buffers (`shared`) that every recomputed block of
// every slot uses: the forward writes them and the next op reads them at once, and backward() refills them by
// layer_recompute() just before the block's backward. layer_forward and layer_backward are the same code in every
// mode; only where the handles point differs.
//   SELECTIVE: per slot ln1 (+ stats), qkv, res2, ln2 (+ stats), res3; shared atty, lse (attention_forward of the
//     stored qkv) and fch, fch_gelu (the fc GEMM with its GELU epilogue of the stored ln2: the same fused call as
//     the forward, because a GPU's GELU epilogue works on the unrounded accumulator, so gelu_forward of the stored
//     pre-activation would not give the forward's bits).
//   FULL: per slot only res3 (the block's output: the next block's input, or the head's); shared everything else,
//     recomputed from the block's input up to fch_gelu (the MLP projection is not needed by the backward). The
//     forward made ln1 of a block after the first by the previous block's fused residual + LayerNorm; the
//     recomputation makes it by layernorm_forward of the stored sum, which is the same arithmetic on the same
//     values (the CPU's fused call is add then layernorm_forward; the CUDA kernel normalizes the rounded sum it
//     stored, with the same row function as layernorm_forward_kernel). The row-parallel attention projection
//     all-reduces again: every TP rank recomputes the same blocks at the same point of the same backward, so the
//     collectives stay in the same order on all of them. With sequence parallelism the same holds for the
//     recomputation's all-gathers and reduce-scatters (SELECTIVE's fc GEMM gathers the stored ln2 chunk again);
//     the per-slot norm and residual tensors are then chunks, and the gathered copies live in the layers' shared
//     scratch, never per slot.
// Bit-identity with NONE is tested in tests/recompute_cli_test.cc (losses, gradient norms, final weights).
void Gpt2Model::plan_activations(TensorArena& arena, bool recompute) {
  const bool train = use_ == ModelUse::kTrain;
  const DType A = config_.dtype;  // compute dtype
  const int64_t B = micro_batch_, T = seq_len_, BT = B * T, C = C_, Cl = local_C_, Hl = local_heads_;
  // Rows of the norm and residual activations: this TP rank's chunk with sequence parallelism (Note [Sequence
  // parallelism] in parallel/tensor_parallel.h), else all B*T. Attention and the MLP's hidden layer see all rows.
  const int64_t R = stage_rows();
  const bool full = recompute && config_.recompute == Recompute::kFull;
  // The buffers every recomputed block shares (Note [Recomputation]); -1 where a block keeps its own.
  LayerActs shared{-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
  bool any_recomputed = false;
  const int slot_layers = stage_.max_chunk_layers();  // every slot serves every chunk
  for (int j = 0; j < slot_layers; ++j) any_recomputed |= recompute && slot_layer_recomputed(j);
  const size_t shared_begin = arena.bytes();
  if (any_recomputed) {
    if (full) {
      shared.ln1 = arena.reserve(A, {R, C});
      shared.ln1_mean = arena.reserve(DType::kF32, {R});
      shared.ln1_rstd = arena.reserve(DType::kF32, {R});
      shared.qkv = arena.reserve(A, {B, T, 3 * Cl});
      shared.res2 = arena.reserve(A, {R, C});
      shared.ln2 = arena.reserve(A, {R, C});
      shared.ln2_mean = arena.reserve(DType::kF32, {R});
      shared.ln2_rstd = arena.reserve(DType::kF32, {R});
    }
    shared.atty = arena.reserve(A, {BT, Cl});
    shared.lse = arena.reserve(DType::kF32, {B, Hl, T});
    shared.fch = arena.reserve(A, {BT, 4 * Cl});
    shared.fch_gelu = arena.reserve(A, {BT, 4 * Cl});
  }
  int64_t shared_bytes = static_cast<int64_t>(arena.bytes() - shared_begin);
  int64_t slot_bytes = 0;
  // A handle of block l: the shared one when l is recomputed and shares it, else a new one for the slot.
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
      la.ln1 = own(shared.ln1, r, A, {R, C});
      la.ln1_mean = own(shared.ln1_mean, r, DType::kF32, {R});
      la.ln1_rstd = own(shared.ln1_rstd, r, DType::kF32, {R});
      la.qkv = own(shared.qkv, r, A, {B, T, 3 * Cl});
      la.atty = own(shared.atty, r, A, {BT, Cl});
      la.lse = own(shared.lse, r, DType::kF32, {B, Hl, T});
      la.res2 = own(shared.res2, r, A, {R, C});
      la.ln2 = own(shared.ln2, r, A, {R, C});
      la.ln2_mean = own(shared.ln2_mean, r, DType::kF32, {R});
      la.ln2_rstd = own(shared.ln2_rstd, r, DType::kF32, {R});
      la.fch = own(shared.fch, r, A, {BT, 4 * Cl});
      la.fch_gelu = own(shared.fch_gelu, r, A, {BT, 4 * Cl});
      la.res3 = arena.reserve(A, {R, C});
      a.layers.push_back(la);
    }
    if (stage_.has_head) {
      a.lnf = arena.reserve(A, {R, C});
      a.lnf_mean = arena.reserve(DType::kF32, {R});
      a.lnf_rstd = arena.reserve(DType::kF32, {R});
      a.losses = train ? arena.reserve(DType::kF32, {BT}) : -1;
      a.d_lnf = train ? arena.reserve(A, {R, C}) : -1;
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
    d_big_ = arena.reserve(A, {BT * 4 * Cl});
    d_atty_ = arena.reserve(A, {BT, Cl});
    sp_gathered_ = sequence_parallel_ ? arena.reserve(A, {BT, C}) : -1;
    sp_partial_ = sequence_parallel_ ? arena.reserve(A, {BT, C}) : -1;
  } else {
    row_max_ = row_stats_ = d_res_ = d_ln_ = d_big_ = d_atty_ = sp_gathered_ = sp_partial_ = -1;
    const int64_t hs = config_.head_size();
    for (int j = 0; j < stage_.layer_count(); ++j) {
      k_cache_.push_back(arena.reserve(A, {B, T, Hl, hs}));
      v_cache_.push_back(arena.reserve(A, {B, T, Hl, hs}));
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

Tensor Gpt2Model::tokens(int slot) const { return act(slot_acts_[slot].tokens); }
Tensor Gpt2Model::loss_weights(int slot) const {
  TS_ASSERT(use_ == ModelUse::kTrain && stage_.has_head,
            "loss weights on a stage without the head or of an inference model");
  return act(slot_acts_[slot].loss_weights);
}
Tensor Gpt2Model::targets(int slot) const {
  TS_ASSERT(use_ == ModelUse::kTrain, "targets of an inference model");
  return act(slot_acts_[slot].targets);
}
Tensor Gpt2Model::stage_input(int /*chunk*/, int slot) const { return act(slot_acts_[slot].input); }

Tensor Gpt2Model::layer_input(int slot, int i) const {
  return i == 0 ? act(slot_acts_[slot].input) : act(slot_acts_[slot].layers[i - 1].res3);
}

Tensor Gpt2Model::stage_output(int chunk, int slot) const {
  Tensor out = layer_input(slot, chunk_layers(chunk));
  return out.view({stage_rows(), C_});
}

SequenceParallelScratch Gpt2Model::scratch() const {
  if (!sequence_parallel_) return {};
  return {act(sp_gathered_), act(sp_partial_)};
}

Tensor Gpt2Model::stage_input_grad() const {
  TS_ASSERT(use_ == ModelUse::kTrain, "stage_input_grad of an inference model");
  return act(d_res_);
}

void Gpt2Model::blocks_forward(int chunk, int slot) {
  const SlotActs& a = slot_acts_[slot];
  if (embedding_chunk(chunk)) {
    // x = wte[tokens] + wpe[pos].
    embedding_.forward(act(a.input), act(a.tokens), value(wte_), value(wpe_), seq_len_, scratch());
  }
  const int n_local = chunk_layers(chunk);
  for (int i = 0; i < n_local; ++i) layer_forward(chunk, slot, i);
  if (head_chunk(chunk) && n_local == 0) {  // a head-only chunk: no layer's fused residual + LayerNorm made lnf
    backend_.layernorm_forward(act(a.lnf), act(a.lnf_mean), act(a.lnf_rstd), layer_input(slot, 0), value(lnf_weight_),
                               value(lnf_bias_), config_.norm_eps);
  }
}

void Gpt2Model::forward(int chunk, int slot, bool train, float d_scale) {
  TS_ASSERT(use_ == ModelUse::kTrain, "forward with losses of an inference model: use forward_logits or decode");
  const SlotActs& a = slot_acts_[slot];
  blocks_forward(chunk, slot);
  if (!head_chunk(chunk)) return;
  // logits[:, vocab shard] = lnf(x) wte_shard^T (tied head, column-parallel over the vocabulary).
  const Tensor logits = act(logits_);
  column_.forward(logits, act(a.lnf), value(wte_), Tensor(), scratch());
  cross_entropy_.forward_backward(act(a.losses), logits, act(a.targets),
                                  loss_weighting_ ? act(a.loss_weights) : Tensor(), d_scale, act(row_max_),
                                  act(row_stats_));
  if (!train) return;
  // The head's backward now, while the logits are at hand: the logits buffer is then free for the next
  // micro-batch, and only d_lnf[B*T, C] waits for backward().
  column_.backward(act(a.d_lnf), grad(wte_), Tensor(), logits, act(a.lnf), value(wte_), scratch());
}

Tensor Gpt2Model::forward_logits(int slot) {
  blocks_forward(0, slot);
  if (!stage_.has_head) return Tensor();
  const Tensor logits = act(logits_);
  column_.forward(logits, act(slot_acts_[slot].lnf), value(wte_), Tensor(), scratch());
  return logits;
}

Tensor Gpt2Model::decode(int position, int n_new) {
  TS_ASSERT(use_ == ModelUse::kInference && position >= 0 && n_new >= 1 && position + n_new <= seq_len_,
            "decode of positions [", position, ", ", position + n_new, ") with a ", seq_len_, "-position ",
            use_ == ModelUse::kTrain ? "training model" : "cache");
  const int64_t N = static_cast<int64_t>(micro_batch_) * n_new;
  const SlotActs& a = slot_acts_[0];
  Tensor x = decode_input(n_new).view({N, C_});
  if (stage_.has_embedding) {
    // x = wte[tokens] + wpe[position + t]: the position table from row `position` on, indexed by t < n_new.
    const Tensor wpe = value(wpe_);
    const Tensor positions = wpe.slice_from(position * C_, {wpe.dim(0) - position, C_});
    embedding_.forward(x, decode_tokens(n_new), value(wte_), positions, n_new);
  }
  const int n_local = stage_.layer_count();
  for (int i = 0; i < n_local; ++i) {
    layer_decode(i, x, position, n_new);
    x = act(a.layers[i].res3).front({N, C_});
  }
  if (!stage_.has_head) return x.view({micro_batch_, n_new, C_});
  const Tensor lnf = act(a.lnf).front({N, C_});
  backend_.layernorm_forward(lnf, act(a.lnf_mean).front({N}), act(a.lnf_rstd).front({N}), x, value(lnf_weight_),
                             value(lnf_bias_), config_.norm_eps);
  const Tensor logits = act(logits_).front({N, vocab_rows_});
  column_.forward(logits, lnf, value(wte_), Tensor());
  return logits;
}

void Gpt2Model::layer_decode(int i, Tensor x, int position, int n_new) {
  const LayerParams& p = layer_params_[i];
  const LayerActs& a = slot_acts_[0].layers[i];
  const int64_t N = static_cast<int64_t>(micro_batch_) * n_new, C = C_, Cl = local_C_;
  const float eps = config_.norm_eps;
  // Attention half: x + proj(attention over the cache of qkv(ln1(x))).
  const Tensor ln1 = act(a.ln1).front({N, C});
  backend_.layernorm_forward(ln1, act(a.ln1_mean).front({N}), act(a.ln1_rstd).front({N}), x, value(p.ln1_weight),
                             value(p.ln1_bias), eps);
  const Tensor qkv = act(a.qkv).front({micro_batch_, n_new, 3 * Cl});
  column_.forward(qkv, ln1, value(p.qkv_weight), value(p.qkv_bias));
  const Tensor atty = act(a.atty).front({N, Cl});
  backend_.cached_attention_forward(atty, qkv, act(k_cache_[i]), act(v_cache_[i]), local_heads_, local_heads_,
                                    position);
  const Tensor res2 = act(a.res2).front({N, C});
  row_.forward(res2, atty, value(p.attn_proj_weight), value(p.attn_proj_bias));
  const Tensor ln2 = act(a.ln2).front({N, C});
  backend_.residual_layernorm_forward(res2, ln2, act(a.ln2_mean).front({N}), act(a.ln2_rstd).front({N}), res2, x,
                                      value(p.ln2_weight), value(p.ln2_bias), eps);
  // MLP half: res2 + proj(gelu(fc(ln2(res2)))). res3 may be x's own buffer (the layers share theirs): x is dead.
  const Tensor fch = act(a.fch).front({N, 4 * Cl}), fch_gelu = act(a.fch_gelu).front({N, 4 * Cl});
  column_.forward_gelu(fch_gelu, fch, ln2, value(p.fc_weight), value(p.fc_bias));
  const Tensor res3 = act(a.res3).front({N, C});
  row_.forward(res3, fch_gelu, value(p.mlp_proj_weight), value(p.mlp_proj_bias));
  backend_.add(res3, res3, res2);
}

void Gpt2Model::layer_forward(int chunk, int slot, int i) {
  const LayerParams& p = layer_params_[chunk_begin(chunk) + i];
  const LayerActs& a = slot_acts_[slot].layers[i];
  const Tensor x = layer_input(slot, i);
  // Attention half: x + proj(attention(qkv(ln1(x)))).
  if (i == 0) {
    backend_.layernorm_forward(act(a.ln1), act(a.ln1_mean), act(a.ln1_rstd), x, value(p.ln1_weight), value(p.ln1_bias),
                               config_.norm_eps);
  }
  column_.forward(act(a.qkv), act(a.ln1), value(p.qkv_weight), value(p.qkv_bias), scratch());
  backend_.attention_forward(act(a.atty), act(a.lse), act(a.qkv), local_heads_, local_heads_);
  row_.forward(act(a.res2), act(a.atty), value(p.attn_proj_weight), value(p.attn_proj_bias), scratch());
  // res2 = x + attention output, and ln2 of it, in one pass.
  backend_.residual_layernorm_forward(act(a.res2), act(a.ln2), act(a.ln2_mean), act(a.ln2_rstd), act(a.res2), x,
                                      value(p.ln2_weight), value(p.ln2_bias), config_.norm_eps);
  // MLP half: res2 + proj(gelu(fc(ln2(res2)))).
  column_.forward_gelu(act(a.fch_gelu), act(a.fch), act(a.ln2), value(p.fc_weight), value(p.fc_bias), scratch());
  row_.forward(act(a.res3), act(a.fch_gelu), value(p.mlp_proj_weight), value(p.mlp_proj_bias), scratch());
  // res3 = res2 + MLP output, fused with the LayerNorm that reads it next: the next layer's ln1, or the head's lnf.
  // Only within the chunk: the next chunk's first block runs on another rank, which starts it with its own ln1.
  if (i + 1 < chunk_layers(chunk)) {
    const LayerParams& next = layer_params_[chunk_begin(chunk) + i + 1];
    const LayerActs& na = slot_acts_[slot].layers[i + 1];
    backend_.residual_layernorm_forward(act(a.res3), act(na.ln1), act(na.ln1_mean), act(na.ln1_rstd), act(a.res3),
                                        act(a.res2), value(next.ln1_weight), value(next.ln1_bias), config_.norm_eps);
  } else if (head_chunk(chunk)) {
    const SlotActs& sa = slot_acts_[slot];
    backend_.residual_layernorm_forward(act(a.res3), act(sa.lnf), act(sa.lnf_mean), act(sa.lnf_rstd), act(a.res3),
                                        act(a.res2), value(lnf_weight_), value(lnf_bias_), config_.norm_eps);
  } else {
    backend_.add(act(a.res3), act(a.res3), act(a.res2));
  }
}

void Gpt2Model::layer_recompute(int chunk, int slot, int i) {
  const LayerParams& p = layer_params_[chunk_begin(chunk) + i];
  const LayerActs& a = slot_acts_[slot].layers[i];
  const Tensor x = layer_input(slot, i);
  const bool full = config_.recompute == Recompute::kFull;
  // The calls of layer_forward, in its order, on the same inputs: the same bits (Note [Recomputation]).
  if (full) {
    backend_.layernorm_forward(act(a.ln1), act(a.ln1_mean), act(a.ln1_rstd), x, value(p.ln1_weight), value(p.ln1_bias),
                               config_.norm_eps);
    column_.forward(act(a.qkv), act(a.ln1), value(p.qkv_weight), value(p.qkv_bias), scratch());
  }
  backend_.attention_forward(act(a.atty), act(a.lse), act(a.qkv), local_heads_, local_heads_);
  if (full) {
    row_.forward(act(a.res2), act(a.atty), value(p.attn_proj_weight), value(p.attn_proj_bias), scratch());
    backend_.residual_layernorm_forward(act(a.res2), act(a.ln2), act(a.ln2_mean), act(a.ln2_rstd), act(a.res2), x,
                                        value(p.ln2_weight), value(p.ln2_bias), config_.norm_eps);
  }
  column_.forward_gelu(act(a.fch_gelu), act(a.fch), act(a.ln2), value(p.fc_weight), value(p.fc_bias), scratch());
}

Tensor Gpt2Model::losses(int slot) const {
  TS_ASSERT(stage_.has_head && use_ == ModelUse::kTrain, "losses on a stage without the head or of an inference model");
  return act(slot_acts_[slot].losses);
}

void Gpt2Model::backward(int chunk, int slot, Tensor d_output) {
  TS_ASSERT(use_ == ModelUse::kTrain, "backward of an inference model");
  const SlotActs& a = slot_acts_[slot];
  const int n_local = chunk_layers(chunk);
  const int first_layer = stage_.chunk(chunk).first;
  Tensor d_res = act(d_res_);
  if (head_chunk(chunk)) {
    backend_.fill(d_res, 0.0f);
    backend_.layernorm_backward(d_res, grad(lnf_weight_), grad(lnf_bias_), act(a.d_lnf), layer_input(slot, n_local),
                                value(lnf_weight_), act(a.lnf_mean), act(a.lnf_rstd));
  } else {
    backend_.copy(d_res, d_output);
  }
  for (int i = n_local - 1; i >= 0; --i) {
    if (config_.recomputes(first_layer + i)) layer_recompute(chunk, slot, i);
    layer_backward(chunk, slot, i);
    call_backward_hook(first_layer + i);
  }
  if (embedding_chunk(chunk)) embedding_.backward(grad(wte_), grad(wpe_), d_res, act(a.tokens), seq_len_, scratch());
  call_backward_hook(-1);
}

void Gpt2Model::layer_backward(int chunk, int slot, int i) {
  const LayerParams& p = layer_params_[chunk_begin(chunk) + i];
  const LayerActs& a = slot_acts_[slot].layers[i];
  const int64_t B = micro_batch_, T = seq_len_, BT = B * T;
  Tensor d_res = act(d_res_);  // gradient w.r.t. this layer's output; becomes that w.r.t. its input
  Tensor d_ln = act(d_ln_);
  Tensor d_hidden(act(d_big_).data(), config_.dtype, backend_.device(), {BT, 4 * local_C_});
  Tensor d_qkv(act(d_big_).data(), config_.dtype, backend_.device(), {B, T, 3 * local_C_});
  // MLP half.
  row_.backward(d_hidden, grad(p.mlp_proj_weight), grad(p.mlp_proj_bias), d_res, act(a.fch_gelu),
                value(p.mlp_proj_weight), scratch());
  backend_.gelu_backward(d_hidden, act(a.fch), d_hidden);
  column_.backward(d_ln, grad(p.fc_weight), grad(p.fc_bias), d_hidden, act(a.ln2), value(p.fc_weight), scratch());
  backend_.layernorm_backward(d_res, grad(p.ln2_weight), grad(p.ln2_bias), d_ln, act(a.res2), value(p.ln2_weight),
                              act(a.ln2_mean), act(a.ln2_rstd));
  // Attention half.
  row_.backward(act(d_atty_), grad(p.attn_proj_weight), grad(p.attn_proj_bias), d_res, act(a.atty),
                value(p.attn_proj_weight), scratch());
  backend_.attention_backward(d_qkv, act(d_atty_), act(a.qkv), act(a.atty), act(a.lse), local_heads_, local_heads_);
  column_.backward(d_ln, grad(p.qkv_weight), grad(p.qkv_bias), d_qkv, act(a.ln1), value(p.qkv_weight), scratch());
  backend_.layernorm_backward(d_res, grad(p.ln1_weight), grad(p.ln1_bias), d_ln, layer_input(slot, i),
                              value(p.ln1_weight), act(a.ln1_mean), act(a.ln1_rstd));
}

}  // namespace tessera

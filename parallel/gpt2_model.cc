// GPT-2 stage shard: parameters, activation plan, forward and backward.
#include "parallel/gpt2_model.h"

#include <vector>

#include "core/check.h"
#include "core/init.h"

namespace tessera {

namespace {

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Tensor make_view(void* data, DType dtype, Device device, const std::vector<int64_t>& shape) {
  if (shape.size() == 1) return Tensor(data, dtype, device, {shape[0]});
  return Tensor(data, dtype, device, {shape[0], shape[1]});
}

// Elements [begin, begin + n) of a flat tensor, any dtype.
Tensor elements(const Tensor& flat, int64_t begin, const std::vector<int64_t>& shape) {
  return make_view(static_cast<char*>(flat.data()) + begin * static_cast<int64_t>(dtype_size(flat.dtype())),
                   flat.dtype(), flat.device(), shape);
}

}  // namespace

Gpt2Model::Gpt2Model(const ModelConfig& config, Backend& backend, ProcessGroup& tp, StageRange stage, int micro_batch,
                     int seq_len, int slots)
    : config_(config),
      backend_(backend),
      tp_(tp),
      stage_(stage),
      micro_batch_(micro_batch),
      seq_len_(seq_len),
      slots_(slots) {
  const int tp_size = tp.size(), tp_rank = tp.rank();
  TS_ASSERT(config.n_head % tp_size == 0, "n_head ", config.n_head, " over tp ", tp_size);
  TS_ASSERT(seq_len >= 1 && seq_len <= config.max_seq_len && micro_batch >= 1 && slots >= 1, "bad plan");
  TS_ASSERT(config.dtype == DType::kF32 || config.dtype == DType::kBF16, "compute dtype ", dtype_name(config.dtype));
  TS_ASSERT(stage.first_layer >= 0 && stage.end_layer <= config.n_layer && stage.first_layer <= stage.end_layer,
            "bad stage");
  C_ = config.n_embd;
  local_heads_ = config.n_head / tp_size;
  local_C_ = C_ / tp_size;
  vocab_rows_ = config.padded_vocab(tp_size) / tp_size;
  vocab_start_ = static_cast<int64_t>(tp_rank) * vocab_rows_;
  valid_vocab_ = std::max<int64_t>(0, std::min<int64_t>(vocab_rows_, config.vocab_size - vocab_start_));

  // ---- parameters: the specs this stage holds, sliced for this TP rank, in one flat buffer ----
  const bool tied_head = stage.has_head;
  int64_t total = 0;
  for (const ParamSpec& spec : gpt2_param_specs(config)) {
    bool mine = false;
    if (spec.layer >= 0) {
      mine = spec.layer >= stage.first_layer && spec.layer < stage.end_layer;
    } else if (spec.name == "wte") {
      mine = stage.has_embedding || tied_head;
    } else if (spec.name == "wpe") {
      mine = stage.has_embedding;
    } else {
      mine = stage.has_head;  // lnf
    }
    if (!mine) continue;
    LocalParam p;
    p.spec = spec;
    p.layout = shard_layout(spec, config, tp_rank, tp_size);
    p.offset = total;
    // Replicated parameters count on TP rank 0 only; the tied embedding's copy on the last pipeline stage
    // mirrors the first stage's and does not count.
    p.counted = (spec.tp_split_dim >= 0 || tp_rank == 0) && !(spec.name == "wte" && !stage.has_embedding);
    total += product(p.layout.local_shape);
    params_.push_back(std::move(p));
  }
  param_buffer_ = backend.allocate(static_cast<size_t>(total) * sizeof(float));
  grad_buffer_ = backend.allocate(static_cast<size_t>(total) * sizeof(float));
  flat_params_ = param_buffer_.tensor(0, DType::kF32, {total});
  flat_grads_ = grad_buffer_.tensor(0, DType::kF32, {total});
  flat_compute_ = flat_params_;
  if (config.dtype != DType::kF32) {
    compute_buffer_ = backend.allocate(static_cast<size_t>(total) * dtype_size(config.dtype));
    flat_compute_ = compute_buffer_.tensor(0, config.dtype, {total});
  }
  layer_params_.resize(stage.end_layer - stage.first_layer);
  for (int i = 0; i < static_cast<int>(params_.size()); ++i) {
    LocalParam& p = params_[i];
    p.value = elements(flat_params_, p.offset, p.layout.local_shape);
    p.compute = elements(flat_compute_, p.offset, p.layout.local_shape);
    p.grad = elements(flat_grads_, p.offset, p.layout.local_shape);
    const std::string& n = p.spec.name;
    if (n == "wte")
      wte_ = i;
    else if (n == "wpe")
      wpe_ = i;
    else if (n == "lnf.weight")
      lnf_weight_ = i;
    else if (n == "lnf.bias")
      lnf_bias_ = i;
    else {
      LayerParams& lp = layer_params_[p.spec.layer - stage.first_layer];
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
  backend.fill(flat_params_, 0.0f);
  refresh_compute_params();
  backend.fill(flat_grads_, 0.0f);

  // ---- activations, planned once ----
  const DType A = config.dtype;  // compute dtype
  const int64_t B = micro_batch, T = seq_len, BT = B * T, C = C_, Cl = local_C_, Hl = local_heads_;
  for (int s = 0; s < slots; ++s) {
    SlotActs a{};
    a.tokens = arena_.reserve(DType::kI32, {BT});
    a.targets = arena_.reserve(DType::kI32, {BT});
    a.input = arena_.reserve(A, {B, T, C});
    for (int l = stage.first_layer; l < stage.end_layer; ++l) {
      LayerActs la{};
      la.ln1 = arena_.reserve(A, {BT, C});
      la.ln1_mean = arena_.reserve(DType::kF32, {BT});
      la.ln1_rstd = arena_.reserve(DType::kF32, {BT});
      la.qkv = arena_.reserve(A, {B, T, 3 * Cl});
      la.atty = arena_.reserve(A, {BT, Cl});
      la.lse = arena_.reserve(DType::kF32, {B, Hl, T});
      la.res2 = arena_.reserve(A, {BT, C});
      la.ln2 = arena_.reserve(A, {BT, C});
      la.ln2_mean = arena_.reserve(DType::kF32, {BT});
      la.ln2_rstd = arena_.reserve(DType::kF32, {BT});
      la.fch = arena_.reserve(A, {BT, 4 * Cl});
      la.fch_gelu = arena_.reserve(A, {BT, 4 * Cl});
      la.res3 = arena_.reserve(A, {BT, C});
      a.layers.push_back(la);
    }
    if (stage.has_head) {
      a.lnf = arena_.reserve(A, {BT, C});
      a.lnf_mean = arena_.reserve(DType::kF32, {BT});
      a.lnf_rstd = arena_.reserve(DType::kF32, {BT});
      a.losses = arena_.reserve(DType::kF32, {BT});
      a.d_lnf = arena_.reserve(A, {BT, C});
    }
    slot_acts_.push_back(std::move(a));
  }
  logits_ = stage.has_head ? arena_.reserve(A, {BT, vocab_rows_}) : -1;
  row_max_ = arena_.reserve(DType::kF32, {BT});
  row_stats_ = arena_.reserve(DType::kF32, {2, BT});  // sum_exp, target_logit: one all-reduce for both
  d_res_ = arena_.reserve(A, {B, T, C});
  d_ln_ = arena_.reserve(A, {BT, C});
  d_big_ = arena_.reserve(A, {BT * 4 * Cl});
  d_atty_ = arena_.reserve(A, {BT, Cl});
  arena_.allocate(backend);
}

const LocalParam* Gpt2Model::find_param(const std::string& name) const {
  for (const LocalParam& p : params_)
    if (p.spec.name == name) return &p;
  return nullptr;
}

void Gpt2Model::init_parameters(uint64_t seed) {
  std::vector<float> host;
  for (LocalParam& p : params_) {
    const std::vector<int64_t>& local = p.layout.local_shape;
    const std::vector<int64_t>& global = p.spec.shape;
    const int64_t n = product(local);
    host.assign(n, 0.0f);
    const int64_t cols = local.size() == 2 ? local[1] : 1;
    const int64_t global_cols = global.size() == 2 ? global[1] : 1;
    const uint64_t stream = hash_name(p.spec.name);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      int64_t r = i / cols, c = i % cols;
      // Map the local (row, col) to the global one through the TP split.
      if (p.layout.split_dim == 0) r = p.layout.global_index_of_local[r];
      if (p.layout.split_dim == 1) c = p.layout.global_index_of_local[c];
      if (r < 0) continue;  // vocabulary padding stays zero
      switch (p.spec.init) {
        case InitKind::kZeros:
          host[i] = 0.0f;
          break;
        case InitKind::kOnes:
          host[i] = 1.0f;
          break;
        case InitKind::kNormal:
          host[i] = p.spec.init_std * normal_at(seed, stream, static_cast<uint64_t>(r * global_cols + c));
          break;
      }
    }
    backend_.copy_from_host(p.value, host.data());
  }
  refresh_compute_params();
}

void Gpt2Model::refresh_compute_params() {
  if (has_compute_copy()) backend_.copy(flat_compute_, flat_params_);
}

void Gpt2Model::zero_grads() { backend_.fill(flat_grads_, 0.0f); }

Tensor Gpt2Model::tokens(int slot) const { return act(slot_acts_[slot].tokens); }
Tensor Gpt2Model::targets(int slot) const { return act(slot_acts_[slot].targets); }
Tensor Gpt2Model::stage_input(int slot) const { return act(slot_acts_[slot].input); }

Tensor Gpt2Model::layer_input(int slot, int i) const {
  return i == 0 ? act(slot_acts_[slot].input) : act(slot_acts_[slot].layers[i - 1].res3);
}

Tensor Gpt2Model::stage_output(int slot) const {
  int n = stage_.end_layer - stage_.first_layer;
  Tensor out = layer_input(slot, n);
  return out.view({micro_batch_, seq_len_, C_});
}

Tensor Gpt2Model::stage_input_grad() const { return act(d_res_); }

void Gpt2Model::all_reduce_tp(Tensor t, ReduceOp op) {
  if (tp_.size() > 1) tp_.all_reduce(t, op)->wait();
}

void Gpt2Model::forward(int slot, bool train, float d_scale) {
  const SlotActs& a = slot_acts_[slot];
  const bool tp_lead = tp_.rank() == 0;
  if (stage_.has_embedding) {
    // x = wte[tokens] + wpe[pos]: each TP rank looks up its vocabulary rows (zeros elsewhere), the position
    // embedding is added once (on TP rank 0), and the all-reduce completes every row on every rank.
    backend_.embedding_forward(act(a.input), act(a.tokens), value(wte_), tp_lead ? value(wpe_) : Tensor(), seq_len_,
                               vocab_start_);
    all_reduce_tp(act(a.input), ReduceOp::kSum);
  }
  const int n_local = stage_.end_layer - stage_.first_layer;
  for (int i = 0; i < n_local; ++i) layer_forward(slot, i);
  if (!stage_.has_head) return;
  if (n_local == 0) {  // a head-only stage: no layer's fused residual + LayerNorm has computed lnf
    backend_.layernorm_forward(act(a.lnf), act(a.lnf_mean), act(a.lnf_rstd), layer_input(slot, 0), value(lnf_weight_),
                               value(lnf_bias_), config_.norm_eps);
  }

  const int64_t BT = static_cast<int64_t>(micro_batch_) * seq_len_;
  Tensor logits = act(logits_), row_max = act(row_max_), row_stats = act(row_stats_);
  Tensor sum_exp = row_stats.view({2 * BT});
  Tensor sum_exp_part(sum_exp.f32(), DType::kF32, backend_.device(), {BT});
  Tensor target_logit(sum_exp.f32() + BT, DType::kF32, backend_.device(), {BT});
  // logits[:, vocab shard] = lnf(x) wte_shard^T (tied head, column-parallel over the vocabulary).
  backend_.matmul_forward(logits, act(a.lnf), value(wte_), Tensor());
  backend_.cross_entropy_row_max(row_max, logits, valid_vocab_);
  all_reduce_tp(row_max, ReduceOp::kMax);
  backend_.cross_entropy_row_stats(sum_exp_part, target_logit, logits, row_max, act(a.targets), vocab_start_,
                                   valid_vocab_);
  all_reduce_tp(sum_exp, ReduceOp::kSum);
  backend_.cross_entropy_loss_backward(act(a.losses), logits, row_max, sum_exp_part, target_logit, act(a.targets),
                                       vocab_start_, valid_vocab_, d_scale);
  if (!train) return;
  // The head's backward now, while the logits are at hand: the logits buffer is then free for the next
  // micro-batch, and only d_lnf[B*T, C] waits for backward().
  backend_.matmul_backward(act(a.d_lnf), grad(wte_), Tensor(), logits, act(a.lnf), value(wte_));
  all_reduce_tp(act(a.d_lnf), ReduceOp::kSum);
}

void Gpt2Model::layer_forward(int slot, int i) {
  const LayerParams& p = layer_params_[i];
  const LayerActs& a = slot_acts_[slot].layers[i];
  const bool tp_lead = tp_.rank() == 0;
  const Tensor x = layer_input(slot, i);
  // Attention half: x + proj(attention(qkv(ln1(x)))).
  if (i == 0) {
    backend_.layernorm_forward(act(a.ln1), act(a.ln1_mean), act(a.ln1_rstd), x, value(p.ln1_weight), value(p.ln1_bias),
                               config_.norm_eps);
  }
  backend_.matmul_forward(act(a.qkv), act(a.ln1), value(p.qkv_weight), value(p.qkv_bias));
  // GPT-2 is multi-head attention: every query head has its own key/value head.
  backend_.attention_forward(act(a.atty), act(a.lse), act(a.qkv), local_heads_, local_heads_);
  // Row-parallel: every rank adds its heads' share; the replicated bias is added once (TP rank 0).
  backend_.matmul_forward(act(a.res2), act(a.atty), value(p.attn_proj_weight),
                          tp_lead ? value(p.attn_proj_bias) : Tensor());
  all_reduce_tp(act(a.res2), ReduceOp::kSum);
  // res2 = x + attention output, and ln2 of it, in one pass.
  backend_.residual_layernorm_forward(act(a.res2), act(a.ln2), act(a.ln2_mean), act(a.ln2_rstd), act(a.res2), x,
                                      value(p.ln2_weight), value(p.ln2_bias), config_.norm_eps);
  // MLP half: res2 + proj(gelu(fc(ln2(res2)))).
  backend_.matmul_gelu_forward(act(a.fch_gelu), act(a.fch), act(a.ln2), value(p.fc_weight), value(p.fc_bias));
  backend_.matmul_forward(act(a.res3), act(a.fch_gelu), value(p.mlp_proj_weight),
                          tp_lead ? value(p.mlp_proj_bias) : Tensor());
  all_reduce_tp(act(a.res3), ReduceOp::kSum);
  // res3 = res2 + MLP output, fused with the LayerNorm that reads it next: the next layer's ln1, or the head's lnf.
  const int n_local = stage_.end_layer - stage_.first_layer;
  if (i + 1 < n_local) {
    const LayerParams& next = layer_params_[i + 1];
    const LayerActs& na = slot_acts_[slot].layers[i + 1];
    backend_.residual_layernorm_forward(act(a.res3), act(na.ln1), act(na.ln1_mean), act(na.ln1_rstd), act(a.res3),
                                        act(a.res2), value(next.ln1_weight), value(next.ln1_bias), config_.norm_eps);
  } else if (stage_.has_head) {
    const SlotActs& sa = slot_acts_[slot];
    backend_.residual_layernorm_forward(act(a.res3), act(sa.lnf), act(sa.lnf_mean), act(sa.lnf_rstd), act(a.res3),
                                        act(a.res2), value(lnf_weight_), value(lnf_bias_), config_.norm_eps);
  } else {
    backend_.add(act(a.res3), act(a.res3), act(a.res2));
  }
}

Tensor Gpt2Model::losses(int slot) const {
  TS_ASSERT(stage_.has_head, "losses on a stage without the head");
  return act(slot_acts_[slot].losses);
}

void Gpt2Model::backward(int slot, Tensor d_output) {
  const SlotActs& a = slot_acts_[slot];
  const int n_local = stage_.end_layer - stage_.first_layer;
  Tensor d_res = act(d_res_);
  if (stage_.has_head) {
    backend_.fill(d_res, 0.0f);
    backend_.layernorm_backward(d_res, grad(lnf_weight_), grad(lnf_bias_), act(a.d_lnf), layer_input(slot, n_local),
                                value(lnf_weight_), act(a.lnf_mean), act(a.lnf_rstd));
  } else {
    backend_.copy(d_res, d_output);
  }
  for (int i = n_local - 1; i >= 0; --i) {
    layer_backward(slot, i);
    if (backward_hook_) backward_hook_(stage_.first_layer + i);
  }
  if (stage_.has_embedding) {
    // Every TP rank holds the full d_x, so the replicated wpe gets identical gradients everywhere.
    backend_.embedding_backward(grad(wte_), grad(wpe_), d_res, act(a.tokens), seq_len_, vocab_start_);
  }
  if (backward_hook_) backward_hook_(-1);
}

void Gpt2Model::layer_backward(int slot, int i) {
  const LayerParams& p = layer_params_[i];
  const LayerActs& a = slot_acts_[slot].layers[i];
  const int64_t B = micro_batch_, T = seq_len_, BT = B * T;
  Tensor d_res = act(d_res_);  // gradient w.r.t. this layer's output; becomes that w.r.t. its input
  Tensor d_ln = act(d_ln_);
  Tensor d_hidden(act(d_big_).data(), config_.dtype, backend_.device(), {BT, 4 * local_C_});
  Tensor d_qkv(act(d_big_).data(), config_.dtype, backend_.device(), {B, T, 3 * local_C_});
  // MLP half.
  backend_.matmul_backward(d_hidden, grad(p.mlp_proj_weight), grad(p.mlp_proj_bias), d_res, act(a.fch_gelu),
                           value(p.mlp_proj_weight));
  backend_.gelu_backward(d_hidden, act(a.fch), d_hidden);
  backend_.matmul_backward(d_ln, grad(p.fc_weight), grad(p.fc_bias), d_hidden, act(a.ln2), value(p.fc_weight));
  all_reduce_tp(d_ln, ReduceOp::kSum);
  backend_.layernorm_backward(d_res, grad(p.ln2_weight), grad(p.ln2_bias), d_ln, act(a.res2), value(p.ln2_weight),
                              act(a.ln2_mean), act(a.ln2_rstd));
  // Attention half.
  backend_.matmul_backward(act(d_atty_), grad(p.attn_proj_weight), grad(p.attn_proj_bias), d_res, act(a.atty),
                           value(p.attn_proj_weight));
  backend_.attention_backward(d_qkv, act(d_atty_), act(a.qkv), act(a.atty), act(a.lse), local_heads_, local_heads_);
  backend_.matmul_backward(d_ln, grad(p.qkv_weight), grad(p.qkv_bias), d_qkv, act(a.ln1), value(p.qkv_weight));
  all_reduce_tp(d_ln, ReduceOp::kSum);
  backend_.layernorm_backward(d_res, grad(p.ln1_weight), grad(p.ln1_bias), d_ln, layer_input(slot, i),
                              value(p.ln1_weight), act(a.ln1_mean), act(a.ln1_rstd));
}

}  // namespace tessera

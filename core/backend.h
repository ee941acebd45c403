// Backend: the compute interface every model layer is written against.
//
// One implementation per device: kernels/cpu (OpenBLAS + OpenMP, the reference) and kernels/cuda (cuBLASLt,
// cuDNN, custom kernels). Code above this interface never knows which one runs it. Every op works on Tensors
// carved out of Buffers allocated by the same backend. Rows: N = batch * seq tokens, processed independently
// unless said so.
//
// Conventions:
// - Linear weights are [out_features, in_features]: y = x W^T + b (as in PyTorch and the fixtures).
// - "overwrites" means the output is written, "accumulates" means the op adds into it (gradients of
//   parameters accumulate across micro-batches; the caller zeroes them once per optimizer step).
// - Ops are asynchronous with respect to the host unless marked "synchronizes".
// - An undefined Tensor (Tensor()) passed for an optional argument means "none".
//
// Note [Precision]
// An op's tensors come in three kinds, and the dtypes each may have are fixed by kind:
// - compute tensors: activations, their gradients, logits and the compute copy of parameters (the weights and
//   biases passed to forward ops). f32, or bf16 for mixed precision; all compute tensors of one op share a dtype.
// - parameter gradients (d_weight, d_bias, d_wte, d_wpe): always f32, and they accumulate.
// - statistics (mean, rstd, lse, row_max, sum_exp, target_logit, losses) and optimizer state: always f32;
//   token ids: i32.
// Arithmetic is f32 whatever the storage: bf16 inputs are widened, sums run in f32 (or wider), and a bf16
// output is rounded once, to nearest even, when it is stored. With bf16 compute tensors the master weights stay
// f32 in the optimizer (adamw_update writes the bf16 copy).
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "core/tensor.h"

namespace tessera {

class Backend;

// Device memory owned by a backend. Move-only; frees on destruction.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Backend* owner, void* data, size_t bytes) : owner_(owner), data_(data), bytes_(bytes) {}
  Buffer(Buffer&& other) noexcept { *this = std::move(other); }
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(); }

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  // A tensor over bytes [offset, offset + size of shape) of this buffer.
  Tensor tensor(size_t offset_bytes, DType dtype, std::initializer_list<int64_t> shape) const;

 private:
  void release();
  Backend* owner_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// AdamW hyper-parameters for one update of one tensor (PyTorch's AdamW, decoupled decay):
//   w -= lr*weight_decay*w; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
//   w -= (lr / (1-b1^step)) * m / (sqrt(v) / sqrt(1-b2^step) + eps),   with g = grad * grad_scale.
struct AdamWStep {
  float lr = 0;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0;  // 0 for tensors that are not decayed
  int64_t step = 1;        // 1-based, for bias correction
  float grad_scale = 1;    // gradient clipping folded into the update
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual const char* name() const = 0;

  // ---- memory: allocate/deallocate and copy_to_host synchronize; copies and fills are ordered like any op --
  virtual Buffer allocate(size_t bytes) = 0;
  virtual void deallocate(void* data) = 0;
  virtual void copy_from_host(Tensor dst, const void* src) = 0;
  virtual void copy_to_host(void* dst, Tensor src) = 0;
  // dst = src, same element count; converts when the dtypes differ (f32 <-> bf16, rounding to nearest even).
  virtual void copy(Tensor dst, Tensor src) = 0;
  virtual void fill(Tensor t, float value) = 0;
  // Waits for every op issued so far.
  virtual void synchronize() = 0;

  // ---- linear layers ---------------------------------------------------------------------------------
  // out[N,OC] = inp[N,C] weight[OC,C]^T (+ bias[OC]). Overwrites out.
  virtual void matmul_forward(Tensor out, Tensor inp, Tensor weight, Tensor bias) = 0;
  // d_inp[N,C] = d_out[N,OC] weight (overwrites; skipped if undefined);
  // d_weight[OC,C] += d_out^T inp; d_bias[OC] += column sums of d_out (skipped if undefined).
  virtual void matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp,
                               Tensor weight) = 0;

  // out_gelu = gelu(pre_gelu), pre_gelu = inp weight^T + bias: matmul_forward then gelu_forward, which a backend
  // may fuse (a GEMM epilogue). Both overwrite.
  virtual void matmul_gelu_forward(Tensor out_gelu, Tensor pre_gelu, Tensor inp, Tensor weight, Tensor bias);

  // ---- normalization and activations -----------------------------------------------------------------
  // out = (inp - mean) * rstd * weight + bias per row of [N,C]; saves mean[N], rstd[N]. Overwrites.
  virtual void layernorm_forward(Tensor out, Tensor mean, Tensor rstd, Tensor inp, Tensor weight, Tensor bias,
                                 float eps) = 0;
  // d_inp[N,C], d_weight[C], d_bias[C] all accumulate.
  virtual void layernorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp, Tensor weight,
                                  Tensor mean, Tensor rstd) = 0;
  // The residual connection and the next LayerNorm: residual_out = a + b, then layernorm_forward of it into out.
  // residual_out may alias a or b. Overwrites. Its backward is layernorm_backward, whose d_inp accumulates into
  // the residual stream's gradient.
  virtual void residual_layernorm_forward(Tensor residual_out, Tensor out, Tensor mean, Tensor rstd, Tensor a, Tensor b,
                                          Tensor weight, Tensor bias, float eps);
  // RMSNorm: out = inp * rstd * weight per row of [N,C]; saves rstd[N] = 1/sqrt(mean(inp^2) + eps). Overwrites.
  virtual void rmsnorm_forward(Tensor out, Tensor rstd, Tensor inp, Tensor weight, float eps) = 0;
  // d_inp[N,C] and d_weight[C] accumulate, from d_out[N,C] and the forward's inp, weight and rstd.
  virtual void rmsnorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
                                Tensor rstd) = 0;
  // The residual connection and the next RMSNorm: residual_out = a + b, then rmsnorm_forward of it into out.
  // residual_out may alias a or b; out aliases none of them. Overwrites. Its backward is rmsnorm_backward.
  virtual void residual_rmsnorm_forward(Tensor residual_out, Tensor out, Tensor rstd, Tensor a, Tensor b, Tensor weight,
                                        float eps);
  // GELU, tanh approximation. Overwrites.
  virtual void gelu_forward(Tensor out, Tensor inp) = 0;
  // d_inp = d_out * gelu'(inp). Overwrites; d_inp may alias d_out.
  virtual void gelu_backward(Tensor d_inp, Tensor inp, Tensor d_out) = 0;
  // out = a + b elementwise. Overwrites; out may alias a or b.
  virtual void add(Tensor out, Tensor a, Tensor b) = 0;
  // SwiGLU over gate_up[N,2F], whose columns [0,F) are the gate g and [F,2F) the up projection u:
  // out[N,F] = silu(g) * u, silu(g) = g * sigmoid(g). Overwrites.
  virtual void swiglu_forward(Tensor out, Tensor gate_up) = 0;
  // d_gate_up[N,2F] = [d_out * u * silu'(g) | d_out * silu(g)], from d_out[N,F] and the forward's gate_up.
  // Overwrites; d_gate_up aliases neither input.
  virtual void swiglu_backward(Tensor d_gate_up, Tensor d_out, Tensor gate_up) = 0;

  // ---- attention ---------------------------------------------------------------------------------------
  // The packed qkv[B,T,(H + 2*KV)*hs] of H query heads and KV key/value heads (KV divides H): each row holds
  // [Q heads (H*hs) | K heads (KV*hs) | V heads (KV*hs)], head h owning columns [h*hs, (h+1)*hs) of its part.
  // With KV == H (multi-head attention) that is [Q | K | V] of C = H*hs columns each.
  //
  // Rotary position embedding (RoPE), rotate-half convention, in place on the Q and K heads of qkv viewed as
  // [N, (H + 2*KV)*hs] (V untouched). Row i has position p = i % seq_len; in each head, for d < hs/2 the pair
  // (x_d, x_{d+hs/2}) is rotated by the angle p * theta^(-2d/hs):
  //   x_d' = x_d cos - x_{d+hs/2} sin,   x_{d+hs/2}' = x_{d+hs/2} cos + x_d sin.
  // The angle and its cosine and sine are computed in double and the cosine and sine rounded once to f32, as the
  // reference fixtures compute them (exact at any position). hs must be even.
  virtual void rope_forward(Tensor qkv, int n_head, int n_kv_head, int seq_len, float theta) = 0;
  // The adjoint (and inverse) rotation, in place on the Q and K parts of the gradient d_qkv (same layout);
  // the V part is untouched.
  virtual void rope_backward(Tensor d_qkv, int n_head, int n_kv_head, int seq_len, float theta) = 0;
  // rope_forward at positions shifted by `position`: row i has position position + i % seq_len (inference, where
  // the rows are new tokens that follow `position` cached ones). rope_forward is rope_forward_at position 0.
  virtual void rope_forward_at(Tensor qkv, int n_head, int n_kv_head, int seq_len, int position, float theta) = 0;
  //
  // Causal grouped-query attention over qkv (layout above): query head h attends with key/value head
  // h / (H / KV). Scores are scaled by 1/sqrt(hs).
  // out[B,T,H*hs] overwrites; lse[B,H,T] (f32) saves each query row's log-sum-exp of its scaled, causally
  // masked scores (natural log), from which backward recomputes the probabilities (flash attention): no [T,T]
  // matrix outlives a call.
  virtual void attention_forward(Tensor out, Tensor lse, Tensor qkv, int n_head, int n_kv_head) = 0;
  // d_qkv (the layout of qkv) overwrites, from d_out[B,T,H*hs] and the forward's qkv, out and lse; the gradient
  // of a key/value head sums over the query heads that share it.
  virtual void attention_backward(Tensor d_qkv, Tensor d_out, Tensor qkv, Tensor out, Tensor lse, int n_head,
                                  int n_kv_head) = 0;
  //
  // Inference with a key/value cache: qkv[B,Tq,(H + 2*KV)*hs] (layout above, RoPE already applied) holds Tq new
  // tokens of each sequence, at positions [position, position + Tq). Their K and V heads are first copied into
  // rows [position, position + Tq) of k_cache and v_cache [B,T_cache,KV,hs] (position + Tq <= T_cache; rows
  // before position hold the earlier tokens' keys and values), then query t attends causally over cached rows
  // [0, position + t], with query head h reading key/value head h / (H / KV) and scores scaled by 1/sqrt(hs).
  // out[B,Tq,H*hs] overwrites; nothing is saved for a backward. Caches have the compute dtype.
  virtual void cached_attention_forward(Tensor out, Tensor qkv, Tensor k_cache, Tensor v_cache, int n_head,
                                        int n_kv_head, int position) = 0;

  // ---- embeddings ---------------------------------------------------------------------------------------
  // out[N,C] = wte[tokens[i] - vocab_start] (zero when the token is outside this shard's
  //            [vocab_start, vocab_start + rows of wte)) + wpe[i % seq_len] (if wpe is defined). Overwrites.
  virtual void embedding_forward(Tensor out, Tensor tokens, Tensor wte, Tensor wpe, int seq_len,
                                 int64_t vocab_start) = 0;
  // d_wte and d_wpe accumulate (d_wpe skipped if undefined).
  virtual void embedding_backward(Tensor d_wte, Tensor d_wpe, Tensor d_out, Tensor tokens, int seq_len,
                                  int64_t vocab_start) = 0;

  // ---- vocab-parallel softmax cross-entropy ---------------------------------------------------------------
  // logits[N,V_local] hold vocabulary entries [vocab_start, vocab_start + V_local) of each row; only the
  // first valid_cols columns are real (the rest is padding and is excluded from the softmax). With tensor
  // parallelism the caller all-reduces row_max (max) and sum_exp, target_logit (sum) between the calls.
  //
  // row_max[N] = max over valid columns. Overwrites.
  virtual void cross_entropy_row_max(Tensor row_max, Tensor logits, int64_t valid_cols) = 0;
  // sum_exp[N] = sum over valid columns of exp(logit - row_max);
  // target_logit[N] = logit of the target if this shard holds it, else 0. Overwrites.
  virtual void cross_entropy_row_stats(Tensor sum_exp, Tensor target_logit, Tensor logits, Tensor row_max,
                                       Tensor targets, int64_t vocab_start, int64_t valid_cols) = 0;
  // losses[N] = log(sum_exp) + row_max - target_logit; row i of logits is overwritten in place with
  // d_scale * weights[i] * (softmax - onehot(target)), zero in padding columns. weights[N] (f32) are per-token
  // loss weights (supervised fine-tuning's loss mask); undefined: every row gets d_scale alone, and weights of 1
  // give exactly those bits. losses are never weighted: the caller weights their sum.
  virtual void cross_entropy_loss_backward(Tensor losses, Tensor logits, Tensor row_max, Tensor sum_exp,
                                           Tensor target_logit, Tensor targets, Tensor weights, int64_t vocab_start,
                                           int64_t valid_cols, float d_scale) = 0;

  // ---- optimizer ---------------------------------------------------------------------------------------------
  // One AdamW update of the f32 master weights param from grad, with moments m and v (all f32, the same
  // shape). If param_copy is defined (bf16, the same shape), it is overwritten with the updated param rounded to
  // nearest even: the compute copy the next forward uses.
  virtual void adamw_update(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWStep& step,
                            Tensor param_copy) = 0;
  // Sum of squares of all elements, accumulated in double. Synchronizes.
  virtual double sum_of_squares(Tensor t) = 0;
  // The sums of squares of several tensors, into sums[i] (accumulated in double): the same values as calling
  // sum_of_squares on each, with one synchronization. The default calls sum_of_squares.
  virtual void sum_of_squares_many(const Tensor* tensors, int count, double* sums);
  // t *= factor.
  virtual void scale(Tensor t, float factor) = 0;
};

}  // namespace tessera

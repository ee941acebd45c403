// CpuBackend: the reference Backend, OpenBLAS sgemm and OpenMP, f32 arithmetic with f32 or bf16 storage (Note [bf16
// on CPU] in cpu_backend.cc). Every op runs synchronously.
#pragma once

#include <vector>

#include "core/backend.h"

namespace tessera {

class CpuBackend final : public Backend {
 public:
  // threads: OpenMP (and OpenBLAS) threads used by this process's ops; must be >= 1.
  explicit CpuBackend(int threads);

  Device device() const override { return Device::kCpu; }
  const char* name() const override { return "cpu"; }
  int threads() const { return threads_; }

  Buffer allocate(size_t bytes) override;
  void deallocate(void* data) override;
  void copy_from_host(Tensor dst, const void* src) override;
  void copy_to_host(void* dst, Tensor src) override;
  void copy(Tensor dst, Tensor src) override;
  void fill(Tensor t, float value) override;
  void synchronize() override {}

  void matmul_forward(Tensor out, Tensor inp, Tensor weight, Tensor bias) override;
  void matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp, Tensor weight) override;
  void layernorm_forward(Tensor out, Tensor mean, Tensor rstd, Tensor inp, Tensor weight, Tensor bias,
                         float eps) override;
  void layernorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp, Tensor weight,
                          Tensor mean, Tensor rstd) override;
  void rmsnorm_forward(Tensor out, Tensor rstd, Tensor inp, Tensor weight, float eps) override;
  void rmsnorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight, Tensor rstd) override;
  void gelu_forward(Tensor out, Tensor inp) override;
  void gelu_backward(Tensor d_inp, Tensor inp, Tensor d_out) override;
  void add(Tensor out, Tensor a, Tensor b) override;
  void swiglu_forward(Tensor out, Tensor gate_up) override;
  void swiglu_backward(Tensor d_gate_up, Tensor d_out, Tensor gate_up) override;
  void rope_forward(Tensor qkv, int n_head, int n_kv_head, int seq_len, float theta) override;
  void rope_backward(Tensor d_qkv, int n_head, int n_kv_head, int seq_len, float theta) override;
  void rope_forward_at(Tensor qkv, int n_head, int n_kv_head, int seq_len, int position, float theta) override;
  void attention_forward(Tensor out, Tensor lse, Tensor qkv, int n_head, int n_kv_head) override;
  void attention_backward(Tensor d_qkv, Tensor d_out, Tensor qkv, Tensor out, Tensor lse, int n_head,
                          int n_kv_head) override;
  void cached_attention_forward(Tensor out, Tensor qkv, Tensor k_cache, Tensor v_cache, int n_head, int n_kv_head,
                                int position) override;
  void embedding_forward(Tensor out, Tensor tokens, Tensor wte, Tensor wpe, int seq_len, int64_t vocab_start) override;
  void embedding_backward(Tensor d_wte, Tensor d_wpe, Tensor d_out, Tensor tokens, int seq_len,
                          int64_t vocab_start) override;
  void cross_entropy_row_max(Tensor row_max, Tensor logits, int64_t valid_cols) override;
  void cross_entropy_row_stats(Tensor sum_exp, Tensor target_logit, Tensor logits, Tensor row_max, Tensor targets,
                               int64_t vocab_start, int64_t valid_cols) override;
  void cross_entropy_loss_backward(Tensor losses, Tensor logits, Tensor row_max, Tensor sum_exp, Tensor target_logit,
                                   Tensor targets, Tensor weights, int64_t vocab_start, int64_t valid_cols,
                                   float d_scale) override;
  void adamw_update(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWStep& step, Tensor param_copy) override;
  double sum_of_squares(Tensor t) override;
  void scale(Tensor t, float factor) override;

 private:
  int threads_;
  // f32 scratch for bf16 tensors, reused op after op (Note [bf16 on CPU]).
  std::vector<std::vector<float>> staging_;
};

}  // namespace tessera

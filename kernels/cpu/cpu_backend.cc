// CpuBackend: shape checks and dispatch to the per-op kernels in this folder.
#include "kernels/cpu/cpu_backend.h"

#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels/cpu/adamw.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gelu.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/matmul.h"

namespace tessera {

namespace {

// Rows of a [N, C]-viewed tensor: every dimension but the last.
int64_t rows(const Tensor& t) { return t.numel() / t.dim(t.ndim() - 1); }
int64_t cols(const Tensor& t) { return t.dim(t.ndim() - 1); }

void expect_same_size(const Tensor& a, const Tensor& b, const char* what) {
  TS_ASSERT(a.numel() == b.numel(), what, ": ", a.shape_string(), " vs ", b.shape_string());
}

const float* f32_or_null(const Tensor& t) { return t.defined() ? t.f32() : nullptr; }
float* mutable_f32_or_null(const Tensor& t) { return t.defined() ? t.f32() : nullptr; }

}  // namespace

CpuBackend::CpuBackend(int threads) : threads_(threads) {
  TS_CHECK(threads >= 1, ConfigError, "CPU threads must be at least 1, got ", threads);
  omp_set_num_threads(threads);
}

Buffer CpuBackend::allocate(size_t bytes) {
  size_t rounded = (bytes + 63) / 64 * 64;
  void* data = std::aligned_alloc(64, rounded > 0 ? rounded : 64);
  if (data == nullptr) throw std::bad_alloc();
  return Buffer(this, data, bytes);
}

void CpuBackend::deallocate(void* data) { std::free(data); }

void CpuBackend::copy_from_host(Tensor dst, const void* src) { std::memcpy(dst.data(), src, dst.bytes()); }
void CpuBackend::copy_to_host(void* dst, Tensor src) { std::memcpy(dst, src.data(), src.bytes()); }
void CpuBackend::copy(Tensor dst, Tensor src) {
  TS_ASSERT(dst.bytes() == src.bytes(), "copy ", src.shape_string(), " into ", dst.shape_string());
  std::memcpy(dst.data(), src.data(), dst.bytes());
}

void CpuBackend::fill(Tensor t, float value) {
  if (t.dtype() == DType::kI32) {
    int32_t* p = t.i32();
    for (int64_t i = 0, n = t.numel(); i < n; ++i) p[i] = static_cast<int32_t>(value);
    return;
  }
  float* p = t.f32();
  int64_t n = t.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = value;
}

void CpuBackend::matmul_forward(Tensor out, Tensor inp, Tensor weight, Tensor bias) {
  int64_t N = rows(inp), C = cols(inp), OC = weight.dim(0);
  TS_ASSERT(weight.numel() == OC * C && out.numel() == N * OC, "matmul ", inp.shape_string(), " x ",
            weight.shape_string(), "^T -> ", out.shape_string());
  TS_ASSERT(!bias.defined() || bias.numel() == OC, "bias ", bias.shape_string());
  cpu::matmul_forward(out.f32(), inp.f32(), weight.f32(), f32_or_null(bias), N, C, OC);
}

void CpuBackend::matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp,
                                 Tensor weight) {
  int64_t N = rows(inp), C = cols(inp), OC = weight.dim(0);
  TS_ASSERT(d_out.numel() == N * OC && d_weight.numel() == OC * C, "matmul backward shapes");
  TS_ASSERT(!d_inp.defined() || d_inp.numel() == N * C, "d_inp ", d_inp.shape_string());
  cpu::matmul_backward(mutable_f32_or_null(d_inp), d_weight.f32(), mutable_f32_or_null(d_bias), d_out.f32(),
                       inp.f32(), weight.f32(), N, C, OC);
}

void CpuBackend::layernorm_forward(Tensor out, Tensor mean, Tensor rstd, Tensor inp, Tensor weight, Tensor bias,
                                   float eps) {
  int64_t N = rows(inp), C = cols(inp);
  expect_same_size(out, inp, "layernorm out");
  TS_ASSERT(mean.numel() == N && rstd.numel() == N && weight.numel() == C && bias.numel() == C,
            "layernorm shapes");
  cpu::layernorm_forward(out.f32(), mean.f32(), rstd.f32(), inp.f32(), weight.f32(), bias.f32(), eps, N, C);
}

void CpuBackend::layernorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp,
                                    Tensor weight, Tensor mean, Tensor rstd) {
  int64_t N = rows(inp), C = cols(inp);
  expect_same_size(d_inp, inp, "layernorm d_inp");
  expect_same_size(d_out, inp, "layernorm d_out");
  cpu::layernorm_backward(d_inp.f32(), d_weight.f32(), d_bias.f32(), d_out.f32(), inp.f32(), weight.f32(),
                          mean.f32(), rstd.f32(), N, C);
}

void CpuBackend::gelu_forward(Tensor out, Tensor inp) {
  expect_same_size(out, inp, "gelu");
  cpu::gelu_forward(out.f32(), inp.f32(), inp.numel());
}

void CpuBackend::gelu_backward(Tensor d_inp, Tensor inp, Tensor d_out) {
  expect_same_size(d_inp, inp, "gelu backward");
  expect_same_size(d_out, inp, "gelu backward");
  cpu::gelu_backward(d_inp.f32(), inp.f32(), d_out.f32(), inp.numel());
}

void CpuBackend::add(Tensor out, Tensor a, Tensor b) {
  expect_same_size(out, a, "add");
  expect_same_size(out, b, "add");
  float* o = out.f32();
  const float* x = a.f32();
  const float* y = b.f32();
  int64_t n = out.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) o[i] = x[i] + y[i];
}

void CpuBackend::attention_forward(Tensor out, Tensor probs, Tensor qkv, int n_head) {
  TS_ASSERT(qkv.ndim() == 3 && qkv.dim(2) % (3 * n_head) == 0, "qkv ", qkv.shape_string());
  int64_t B = qkv.dim(0), T = qkv.dim(1), hs = qkv.dim(2) / (3 * n_head);
  TS_ASSERT(out.numel() == B * T * n_head * hs && probs.numel() == B * n_head * T * T, "attention shapes");
  cpu::attention_forward(out.f32(), probs.f32(), qkv.f32(), B, T, n_head, hs);
}

void CpuBackend::attention_backward(Tensor d_qkv, Tensor d_probs, Tensor d_out, Tensor qkv, Tensor probs,
                                    int n_head) {
  TS_ASSERT(qkv.ndim() == 3 && qkv.dim(2) % (3 * n_head) == 0, "qkv ", qkv.shape_string());
  int64_t B = qkv.dim(0), T = qkv.dim(1), hs = qkv.dim(2) / (3 * n_head);
  expect_same_size(d_qkv, qkv, "attention d_qkv");
  TS_ASSERT(d_out.numel() == B * T * n_head * hs && d_probs.numel() == probs.numel(), "attention shapes");
  cpu::attention_backward(d_qkv.f32(), d_probs.f32(), d_out.f32(), qkv.f32(), probs.f32(), B, T, n_head, hs);
}

void CpuBackend::embedding_forward(Tensor out, Tensor tokens, Tensor wte, Tensor wpe, int seq_len,
                                   int64_t vocab_start) {
  int64_t N = tokens.numel(), C = cols(wte);
  TS_ASSERT(out.numel() == N * C && N % seq_len == 0, "embedding shapes");
  cpu::embedding_forward(out.f32(), tokens.i32(), wte.f32(), f32_or_null(wpe), N, C, wte.dim(0), seq_len,
                         vocab_start);
}

void CpuBackend::embedding_backward(Tensor d_wte, Tensor d_wpe, Tensor d_out, Tensor tokens, int seq_len,
                                    int64_t vocab_start) {
  int64_t N = tokens.numel(), C = cols(d_wte);
  TS_ASSERT(d_out.numel() == N * C, "embedding backward shapes");
  cpu::embedding_backward(d_wte.f32(), mutable_f32_or_null(d_wpe), d_out.f32(), tokens.i32(), N, C, d_wte.dim(0),
                          seq_len, vocab_start);
}

void CpuBackend::cross_entropy_row_max(Tensor row_max, Tensor logits, int64_t valid_cols) {
  TS_ASSERT(row_max.numel() == rows(logits), "row_max shape");
  cpu::cross_entropy_row_max(row_max.f32(), logits.f32(), rows(logits), cols(logits), valid_cols);
}

void CpuBackend::cross_entropy_row_stats(Tensor sum_exp, Tensor target_logit, Tensor logits, Tensor row_max,
                                         Tensor targets, int64_t vocab_start, int64_t valid_cols) {
  int64_t N = rows(logits);
  TS_ASSERT(sum_exp.numel() == N && target_logit.numel() == N && targets.numel() == N, "row stats shapes");
  cpu::cross_entropy_row_stats(sum_exp.f32(), target_logit.f32(), logits.f32(), row_max.f32(), targets.i32(), N,
                               cols(logits), vocab_start, valid_cols);
}

void CpuBackend::cross_entropy_loss_backward(Tensor losses, Tensor logits, Tensor row_max, Tensor sum_exp,
                                             Tensor target_logit, Tensor targets, int64_t vocab_start,
                                             int64_t valid_cols, float d_scale) {
  int64_t N = rows(logits);
  TS_ASSERT(losses.numel() == N && targets.numel() == N, "loss shapes");
  cpu::cross_entropy_loss_backward(losses.f32(), logits.f32(), row_max.f32(), sum_exp.f32(), target_logit.f32(),
                                   targets.i32(), N, cols(logits), vocab_start, valid_cols, d_scale);
}

void CpuBackend::adamw_update(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWStep& step) {
  expect_same_size(param, grad, "adamw grad");
  expect_same_size(param, m, "adamw m");
  expect_same_size(param, v, "adamw v");
  cpu::adamw_update(param.f32(), grad.f32(), m.f32(), v.f32(), param.numel(), step.lr, step.beta1, step.beta2,
                    step.eps, step.weight_decay, step.step, step.grad_scale);
}

double CpuBackend::sum_of_squares(Tensor t) { return cpu::sum_of_squares(t.f32(), t.numel()); }

void CpuBackend::scale(Tensor t, float factor) {
  float* p = t.f32();
  int64_t n = t.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] *= factor;
}

}  // namespace tessera

// CpuBackend: shape checks and dispatch to the per-op kernels in this folder.
//
// Note [bf16 on CPU]
// The kernels compute in f32. A bf16 compute tensor (core/backend.h, Note [Precision]) is widened into scratch
// before the kernel runs and, if the op writes it, rounded back to nearest even afterwards; f32 tensors are used
// in place. This gives the CPU the GPU's storage precision (every activation rounded once when it is stored), so
// the mixed-precision model, its layouts and its tolerances can be checked without a GPU. It is not fast.
#include "kernels/cpu/cpu_backend.h"

#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "core/bf16.h"
#include "kernels/cpu/adamw.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/cached_attention.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gelu.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/swiglu.h"

namespace tessera {

namespace {

// Rows of a [N, C]-viewed tensor: every dimension but the last.
int64_t rows(const Tensor& t) { return t.numel() / t.dim(t.ndim() - 1); }
int64_t cols(const Tensor& t) { return t.dim(t.ndim() - 1); }

void expect_same_size(const Tensor& a, const Tensor& b, const char* what) {
  TS_ASSERT(a.numel() == b.numel(), what, ": ", a.shape_string(), " vs ", b.shape_string());
}

void widen(float* dst, const uint16_t* src, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

void narrow(uint16_t* dst, const float* src, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

// The f32 data of an op's tensors for the duration of one op (Note [bf16 on CPU]). in() for tensors the op
// reads, out() for tensors it overwrites, inout() for tensors it reads and writes (accumulates into); bf16 outputs
// are rounded back when the Staging object dies. Undefined tensors give nullptr. Scratch comes from the
// backend's pool and is reused by the next op.
class Staging {
 public:
  explicit Staging(std::vector<std::vector<float>>& pool) : pool_(pool) {}
  ~Staging() {
    for (const Pending& p : pending_) narrow(p.dst.bf16(), p.src, p.dst.numel());
  }
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;

  const float* in(const Tensor& t) { return stage(t, /*read=*/true, /*write=*/false); }
  float* out(const Tensor& t) { return stage(t, /*read=*/false, /*write=*/true); }
  float* inout(const Tensor& t) { return stage(t, /*read=*/true, /*write=*/true); }

 private:
  struct Pending {
    Tensor dst;
    const float* src;
  };

  float* stage(const Tensor& t, bool read, bool write) {
    if (!t.defined()) return nullptr;
    if (t.dtype() == DType::kF32) return t.f32();
    TS_ASSERT(t.dtype() == DType::kBF16, "CPU ops take f32 or bf16 tensors, got ", dtype_name(t.dtype()));
    if (next_ == pool_.size()) pool_.emplace_back();
    std::vector<float>& buffer = pool_[next_++];
    if (static_cast<int64_t>(buffer.size()) < t.numel()) buffer.resize(static_cast<size_t>(t.numel()));
    if (read) widen(buffer.data(), t.bf16(), t.numel());
    if (write) pending_.push_back({t, buffer.data()});
    return buffer.data();
  }

  std::vector<std::vector<float>>& pool_;
  size_t next_ = 0;
  std::vector<Pending> pending_;
};

// The heads of a packed qkv[..., (H + 2*KV)*hs] (core/backend.h): checks the counts and returns hs.
int64_t qkv_head_size(const Tensor& qkv, int n_head, int n_kv_head, const char* op) {
  TS_ASSERT(n_head >= 1 && n_kv_head >= 1 && n_head % n_kv_head == 0, op, ": ", n_head, " query heads and ", n_kv_head,
            " key/value heads (the second must divide the first)");
  const int64_t width = qkv.dim(qkv.ndim() - 1), heads = n_head + 2 * static_cast<int64_t>(n_kv_head);
  TS_ASSERT(width % heads == 0, op, ": qkv ", qkv.shape_string(), " is not ", heads, " heads wide");
  return width / heads;
}

// Every compute tensor of an op shares one dtype, f32 or bf16 (undefined ones are skipped).
void expect_compute_dtype(std::initializer_list<Tensor> tensors, const char* op) {
  DType dtype = DType::kF32;
  bool first = true;
  for (const Tensor& t : tensors) {
    if (!t.defined()) continue;
    TS_ASSERT(t.dtype() == DType::kF32 || t.dtype() == DType::kBF16, op, ": compute tensors are f32 or bf16, got ",
              dtype_name(t.dtype()));
    TS_ASSERT(first || t.dtype() == dtype, op, ": compute tensors mix ", dtype_name(dtype), " and ",
              dtype_name(t.dtype()));
    dtype = t.dtype();
    first = false;
  }
}

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
  TS_ASSERT(dst.numel() == src.numel(), "copy ", src.shape_string(), " into ", dst.shape_string());
  if (dst.dtype() == src.dtype()) {
    std::memcpy(dst.data(), src.data(), dst.bytes());
  } else if (dst.dtype() == DType::kBF16 && src.dtype() == DType::kF32) {
    narrow(dst.bf16(), src.f32(), src.numel());
  } else if (dst.dtype() == DType::kF32 && src.dtype() == DType::kBF16) {
    widen(dst.f32(), src.bf16(), src.numel());
  } else {
    TS_ASSERT(false, "no conversion from ", dtype_name(src.dtype()), " to ", dtype_name(dst.dtype()));
  }
}

void CpuBackend::fill(Tensor t, float value) {
  const int64_t n = t.numel();
  if (t.dtype() == DType::kI32) {
    int32_t* p = t.i32();
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int32_t>(value);
  } else if (t.dtype() == DType::kBF16) {
    uint16_t* p = t.bf16();
    const uint16_t bits = f32_to_bf16(value);
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] = bits;
  } else {
    float* p = t.f32();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] = value;
  }
}

void CpuBackend::matmul_forward(Tensor out, Tensor inp, Tensor weight, Tensor bias) {
  int64_t N = rows(inp), C = cols(inp), OC = weight.dim(0);
  TS_ASSERT(weight.numel() == OC * C && out.numel() == N * OC, "matmul ", inp.shape_string(), " x ",
            weight.shape_string(), "^T -> ", out.shape_string());
  TS_ASSERT(!bias.defined() || bias.numel() == OC, "bias ", bias.shape_string());
  expect_compute_dtype({out, inp, weight, bias}, "matmul_forward");
  Staging f32(staging_);
  cpu::matmul_forward(f32.out(out), f32.in(inp), f32.in(weight), f32.in(bias), N, C, OC);
}

void CpuBackend::matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp,
                                 Tensor weight) {
  int64_t N = rows(inp), C = cols(inp), OC = weight.dim(0);
  TS_ASSERT(d_out.numel() == N * OC && d_weight.numel() == OC * C, "matmul backward shapes");
  TS_ASSERT(!d_inp.defined() || d_inp.numel() == N * C, "d_inp ", d_inp.shape_string());
  expect_compute_dtype({d_inp, d_out, inp, weight}, "matmul_backward");
  Staging f32(staging_);
  cpu::matmul_backward(f32.out(d_inp), d_weight.f32(), d_bias.defined() ? d_bias.f32() : nullptr, f32.in(d_out),
                       f32.in(inp), f32.in(weight), N, C, OC);
}

void CpuBackend::layernorm_forward(Tensor out, Tensor mean, Tensor rstd, Tensor inp, Tensor weight, Tensor bias,
                                   float eps) {
  int64_t N = rows(inp), C = cols(inp);
  expect_same_size(out, inp, "layernorm out");
  TS_ASSERT(mean.numel() == N && rstd.numel() == N && weight.numel() == C && bias.numel() == C, "layernorm shapes");
  expect_compute_dtype({out, inp, weight, bias}, "layernorm_forward");
  Staging f32(staging_);
  cpu::layernorm_forward(f32.out(out), mean.f32(), rstd.f32(), f32.in(inp), f32.in(weight), f32.in(bias), eps, N, C);
}

void CpuBackend::layernorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp,
                                    Tensor weight, Tensor mean, Tensor rstd) {
  int64_t N = rows(inp), C = cols(inp);
  expect_same_size(d_inp, inp, "layernorm d_inp");
  expect_same_size(d_out, inp, "layernorm d_out");
  expect_compute_dtype({d_inp, d_out, inp, weight}, "layernorm_backward");
  Staging f32(staging_);
  cpu::layernorm_backward(f32.inout(d_inp), d_weight.f32(), d_bias.f32(), f32.in(d_out), f32.in(inp), f32.in(weight),
                          mean.f32(), rstd.f32(), N, C);
}

void CpuBackend::rmsnorm_forward(Tensor out, Tensor rstd, Tensor inp, Tensor weight, float eps) {
  int64_t N = rows(inp), C = cols(inp);
  expect_same_size(out, inp, "rmsnorm out");
  TS_ASSERT(rstd.numel() == N && weight.numel() == C, "rmsnorm shapes: rstd ", rstd.shape_string(), ", weight ",
            weight.shape_string(), ", inp ", inp.shape_string());
  expect_compute_dtype({out, inp, weight}, "rmsnorm_forward");
  Staging f32(staging_);
  cpu::rmsnorm_forward(f32.out(out), rstd.f32(), f32.in(inp), f32.in(weight), eps, N, C);
}

void CpuBackend::rmsnorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight, Tensor rstd) {
  int64_t N = rows(inp), C = cols(inp);
  expect_same_size(d_inp, inp, "rmsnorm d_inp");
  expect_same_size(d_out, inp, "rmsnorm d_out");
  TS_ASSERT(rstd.numel() == N && weight.numel() == C && d_weight.numel() == C, "rmsnorm backward shapes");
  expect_compute_dtype({d_inp, d_out, inp, weight}, "rmsnorm_backward");
  Staging f32(staging_);
  cpu::rmsnorm_backward(f32.inout(d_inp), d_weight.f32(), f32.in(d_out), f32.in(inp), f32.in(weight), rstd.f32(), N, C);
}

void CpuBackend::gelu_forward(Tensor out, Tensor inp) {
  expect_same_size(out, inp, "gelu");
  expect_compute_dtype({out, inp}, "gelu_forward");
  Staging f32(staging_);
  cpu::gelu_forward(f32.out(out), f32.in(inp), inp.numel());
}

void CpuBackend::gelu_backward(Tensor d_inp, Tensor inp, Tensor d_out) {
  expect_same_size(d_inp, inp, "gelu backward");
  expect_same_size(d_out, inp, "gelu backward");
  expect_compute_dtype({d_inp, inp, d_out}, "gelu_backward");
  Staging f32(staging_);
  const float* x = f32.in(inp);
  const float* dy = f32.in(d_out);
  cpu::gelu_backward(f32.out(d_inp), x, dy, inp.numel());
}

void CpuBackend::add(Tensor out, Tensor a, Tensor b) {
  expect_same_size(out, a, "add");
  expect_same_size(out, b, "add");
  expect_compute_dtype({out, a, b}, "add");
  Staging f32(staging_);
  const float* x = f32.in(a);
  const float* y = f32.in(b);
  float* o = f32.out(out);
  int64_t n = out.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) o[i] = x[i] + y[i];
}

void CpuBackend::swiglu_forward(Tensor out, Tensor gate_up) {
  int64_t N = rows(gate_up), F = cols(gate_up) / 2;
  TS_ASSERT(cols(gate_up) % 2 == 0 && out.numel() == N * F, "swiglu: out ", out.shape_string(), ", gate_up ",
            gate_up.shape_string());
  expect_compute_dtype({out, gate_up}, "swiglu_forward");
  Staging f32(staging_);
  cpu::swiglu_forward(f32.out(out), f32.in(gate_up), N, F);
}

void CpuBackend::swiglu_backward(Tensor d_gate_up, Tensor d_out, Tensor gate_up) {
  int64_t N = rows(gate_up), F = cols(gate_up) / 2;
  TS_ASSERT(cols(gate_up) % 2 == 0 && d_out.numel() == N * F, "swiglu backward: d_out ", d_out.shape_string(),
            ", gate_up ", gate_up.shape_string());
  expect_same_size(d_gate_up, gate_up, "swiglu d_gate_up");
  expect_compute_dtype({d_gate_up, d_out, gate_up}, "swiglu_backward");
  Staging f32(staging_);
  const float* g = f32.in(gate_up);
  const float* dy = f32.in(d_out);
  cpu::swiglu_backward(f32.out(d_gate_up), dy, g, N, F);
}

void CpuBackend::rope_forward(Tensor qkv, int n_head, int n_kv_head, int seq_len, float theta) {
  const int64_t hs = qkv_head_size(qkv, n_head, n_kv_head, "rope_forward");
  TS_ASSERT(hs % 2 == 0 && seq_len >= 1 && rows(qkv) % seq_len == 0, "rope_forward: head size ", hs, ", seq_len ",
            seq_len, ", qkv ", qkv.shape_string());
  expect_compute_dtype({qkv}, "rope_forward");
  Staging f32(staging_);
  cpu::rope_forward(f32.inout(qkv), rows(qkv), n_head, n_kv_head, hs, seq_len, theta);
}

void CpuBackend::rope_backward(Tensor d_qkv, int n_head, int n_kv_head, int seq_len, float theta) {
  const int64_t hs = qkv_head_size(d_qkv, n_head, n_kv_head, "rope_backward");
  TS_ASSERT(hs % 2 == 0 && seq_len >= 1 && rows(d_qkv) % seq_len == 0, "rope_backward: head size ", hs, ", seq_len ",
            seq_len, ", d_qkv ", d_qkv.shape_string());
  expect_compute_dtype({d_qkv}, "rope_backward");
  Staging f32(staging_);
  cpu::rope_backward(f32.inout(d_qkv), rows(d_qkv), n_head, n_kv_head, hs, seq_len, theta);
}

void CpuBackend::rope_forward_at(Tensor qkv, int n_head, int n_kv_head, int seq_len, int position, float theta) {
  const int64_t hs = qkv_head_size(qkv, n_head, n_kv_head, "rope_forward_at");
  TS_ASSERT(hs % 2 == 0 && seq_len >= 1 && rows(qkv) % seq_len == 0 && position >= 0, "rope_forward_at: head size ", hs,
            ", seq_len ", seq_len, ", position ", position, ", qkv ", qkv.shape_string());
  expect_compute_dtype({qkv}, "rope_forward_at");
  Staging f32(staging_);
  cpu::rope_forward_at(f32.inout(qkv), rows(qkv), n_head, n_kv_head, hs, seq_len, position, theta);
}

void CpuBackend::cached_attention_forward(Tensor out, Tensor qkv, Tensor k_cache, Tensor v_cache, int n_head,
                                          int n_kv_head, int position) {
  TS_ASSERT(qkv.ndim() == 3 && k_cache.ndim() == 4, "cached_attention_forward: qkv ", qkv.shape_string(), ", cache ",
            k_cache.shape_string());
  const int64_t hs = qkv_head_size(qkv, n_head, n_kv_head, "cached_attention_forward");
  const int64_t B = qkv.dim(0), Tq = qkv.dim(1), T_cache = k_cache.dim(1);
  TS_ASSERT(k_cache.dim(0) == B && k_cache.dim(2) == n_kv_head && k_cache.dim(3) == hs &&
                v_cache.numel() == k_cache.numel() && out.numel() == B * Tq * n_head * hs && position >= 0 &&
                position + Tq <= T_cache,
            "cached_attention_forward shapes: out ", out.shape_string(), ", qkv ", qkv.shape_string(), ", cache ",
            k_cache.shape_string(), ", position ", position);
  expect_compute_dtype({out, qkv, k_cache, v_cache}, "cached_attention_forward");
  Staging f32(staging_);
  cpu::cached_attention_forward(f32.out(out), f32.in(qkv), f32.inout(k_cache), f32.inout(v_cache), B, Tq, T_cache,
                                n_head, n_kv_head, hs, position);
}

void CpuBackend::attention_forward(Tensor out, Tensor lse, Tensor qkv, int n_head, int n_kv_head) {
  TS_ASSERT(qkv.ndim() == 3, "qkv ", qkv.shape_string());
  const int64_t hs = qkv_head_size(qkv, n_head, n_kv_head, "attention_forward");
  int64_t B = qkv.dim(0), T = qkv.dim(1);
  TS_ASSERT(out.numel() == B * T * n_head * hs && lse.numel() == B * n_head * T, "attention shapes");
  expect_compute_dtype({out, qkv}, "attention_forward");
  Staging f32(staging_);
  cpu::attention_forward(f32.out(out), lse.f32(), f32.in(qkv), B, T, n_head, n_kv_head, hs);
}

void CpuBackend::attention_backward(Tensor d_qkv, Tensor d_out, Tensor qkv, Tensor out, Tensor lse, int n_head,
                                    int n_kv_head) {
  TS_ASSERT(qkv.ndim() == 3, "qkv ", qkv.shape_string());
  const int64_t hs = qkv_head_size(qkv, n_head, n_kv_head, "attention_backward");
  int64_t B = qkv.dim(0), T = qkv.dim(1);
  expect_same_size(d_qkv, qkv, "attention d_qkv");
  TS_ASSERT(d_out.numel() == B * T * n_head * hs && out.numel() == d_out.numel() && lse.numel() == B * n_head * T,
            "attention shapes");
  expect_compute_dtype({d_qkv, d_out, qkv, out}, "attention_backward");
  Staging f32(staging_);
  cpu::attention_backward(f32.out(d_qkv), f32.in(d_out), f32.in(qkv), f32.in(out), lse.f32(), B, T, n_head, n_kv_head,
                          hs);
}

void CpuBackend::embedding_forward(Tensor out, Tensor tokens, Tensor wte, Tensor wpe, int seq_len,
                                   int64_t vocab_start) {
  int64_t N = tokens.numel(), C = cols(wte);
  TS_ASSERT(out.numel() == N * C && N % seq_len == 0, "embedding shapes");
  expect_compute_dtype({out, wte, wpe}, "embedding_forward");
  Staging f32(staging_);
  cpu::embedding_forward(f32.out(out), tokens.i32(), f32.in(wte), f32.in(wpe), N, C, wte.dim(0), seq_len, vocab_start);
}

void CpuBackend::embedding_backward(Tensor d_wte, Tensor d_wpe, Tensor d_out, Tensor tokens, int seq_len,
                                    int64_t vocab_start) {
  int64_t N = tokens.numel(), C = cols(d_wte);
  TS_ASSERT(d_out.numel() == N * C, "embedding backward shapes");
  expect_compute_dtype({d_out}, "embedding_backward");
  Staging f32(staging_);
  cpu::embedding_backward(d_wte.f32(), d_wpe.defined() ? d_wpe.f32() : nullptr, f32.in(d_out), tokens.i32(), N, C,
                          d_wte.dim(0), seq_len, vocab_start);
}

void CpuBackend::cross_entropy_row_max(Tensor row_max, Tensor logits, int64_t valid_cols) {
  TS_ASSERT(row_max.numel() == rows(logits), "row_max shape");
  expect_compute_dtype({logits}, "cross_entropy_row_max");
  Staging f32(staging_);
  cpu::cross_entropy_row_max(row_max.f32(), f32.in(logits), rows(logits), cols(logits), valid_cols);
}

void CpuBackend::cross_entropy_row_stats(Tensor sum_exp, Tensor target_logit, Tensor logits, Tensor row_max,
                                         Tensor targets, int64_t vocab_start, int64_t valid_cols) {
  int64_t N = rows(logits);
  TS_ASSERT(sum_exp.numel() == N && target_logit.numel() == N && targets.numel() == N, "row stats shapes");
  expect_compute_dtype({logits}, "cross_entropy_row_stats");
  Staging f32(staging_);
  cpu::cross_entropy_row_stats(sum_exp.f32(), target_logit.f32(), f32.in(logits), row_max.f32(), targets.i32(), N,
                               cols(logits), vocab_start, valid_cols);
}

void CpuBackend::cross_entropy_loss_backward(Tensor losses, Tensor logits, Tensor row_max, Tensor sum_exp,
                                             Tensor target_logit, Tensor targets, Tensor weights, int64_t vocab_start,
                                             int64_t valid_cols, float d_scale) {
  int64_t N = rows(logits);
  TS_ASSERT(losses.numel() == N && targets.numel() == N, "loss shapes");
  TS_ASSERT(!weights.defined() || (weights.numel() == N && weights.dtype() == DType::kF32), "loss weight shape");
  expect_compute_dtype({logits}, "cross_entropy_loss_backward");
  Staging f32(staging_);
  cpu::cross_entropy_loss_backward(losses.f32(), f32.inout(logits), row_max.f32(), sum_exp.f32(), target_logit.f32(),
                                   targets.i32(), weights.defined() ? weights.f32() : nullptr, N, cols(logits),
                                   vocab_start, valid_cols, d_scale);
}

void CpuBackend::adamw_update(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWStep& step, Tensor param_copy) {
  expect_same_size(param, grad, "adamw grad");
  expect_same_size(param, m, "adamw m");
  expect_same_size(param, v, "adamw v");
  TS_ASSERT(!param_copy.defined() || param_copy.numel() == param.numel(), "adamw param_copy ",
            param_copy.shape_string());
  cpu::adamw_update(param.f32(), grad.f32(), m.f32(), v.f32(), param.numel(), step.lr, step.beta1, step.beta2, step.eps,
                    step.weight_decay, step.step, step.grad_scale, param_copy.defined() ? param_copy.bf16() : nullptr);
}

double CpuBackend::sum_of_squares(Tensor t) { return cpu::sum_of_squares(t.f32(), t.numel()); }

void CpuBackend::scale(Tensor t, float factor) {
  Staging f32(staging_);
  float* p = f32.inout(t);
  int64_t n = t.numel();
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] *= factor;
}

}  // namespace tessera

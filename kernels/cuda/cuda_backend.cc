// CudaBackend: shape checks (the CPU backend's) and dispatch to the launchers in this folder.
#include "kernels/cuda/cuda_backend.h"

#include "kernels/cuda/adamw.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/layernorm.h"
#include "kernels/cuda/matmul.h"

namespace tessera {

namespace {

// Rows of a [N, C]-viewed tensor: every dimension but the last.
int64_t rows(const Tensor& t) { return t.numel() / t.dim(t.ndim() - 1); }
int64_t cols(const Tensor& t) { return t.dim(t.ndim() - 1); }

void expect_same_size(const Tensor& a, const Tensor& b, const char* what) {
  TS_ASSERT(a.numel() == b.numel(), what, ": ", a.shape_string(), " vs ", b.shape_string());
}

// Every tensor an op touches must live on the GPU (undefined optional tensors excepted).
void expect_on_gpu(std::initializer_list<const Tensor*> tensors, const char* op) {
  for (const Tensor* t : tensors) {
    TS_ASSERT(!t->defined() || t->device() == Device::kCuda, op, ": a ", t->shape_string(),
              " tensor is not on the GPU");
  }
}

const float* f32_or_null(const Tensor& t) { return t.defined() ? t.f32() : nullptr; }
float* mutable_f32_or_null(const Tensor& t) { return t.defined() ? t.f32() : nullptr; }

}  // namespace

namespace {
// Makes `device` current on the calling thread and returns its name: the first thing the constructor does.
std::string bind_device(int device) {
  CUDA_CHECK(cudaSetDevice(device));
  return cuda::device_name(device);
}
}  // namespace

CudaBackend::CudaBackend(int device) : device_(device), device_name_(bind_device(device)), allocator_(device) {
  stream_ = cuda::Stream::create();
  gemm_ = std::make_unique<cuda::Gemm>(allocator_);
  context_ = cuda::Context{stream_.get(), &allocator_, gemm_.get()};
  CUDA_CHECK(cudaMallocHost(&host_scalar_, sizeof(double)));
}

CudaBackend::~CudaBackend() {
  // Errors cannot be reported from here; whatever failed was reported by the op that saw it.
  cudaStreamSynchronize(stream_.get());
  cudaFreeHost(host_scalar_);
}

Buffer CudaBackend::allocate(size_t bytes) { return Buffer(this, allocator_.allocate(bytes), bytes); }

void CudaBackend::deallocate(void* data) { allocator_.free(data); }

void CudaBackend::copy_from_host(Tensor dst, const void* src) {
  expect_on_gpu({&dst}, "copy_from_host");
  if (dst.bytes() == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst.data(), src, dst.bytes(), cudaMemcpyHostToDevice, stream()));
  CUDA_CHECK(cudaStreamSynchronize(stream()));
}

void CudaBackend::copy_to_host(void* dst, Tensor src) {
  expect_on_gpu({&src}, "copy_to_host");
  if (src.bytes() == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src.data(), src.bytes(), cudaMemcpyDeviceToHost, stream()));
  CUDA_CHECK(cudaStreamSynchronize(stream()));
}

void CudaBackend::copy(Tensor dst, Tensor src) {
  expect_on_gpu({&dst, &src}, "copy");
  TS_ASSERT(dst.bytes() == src.bytes(), "copy ", src.shape_string(), " into ", dst.shape_string());
  if (dst.bytes() == 0 || dst.data() == src.data()) return;
  CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), dst.bytes(), cudaMemcpyDeviceToDevice, stream()));
}

void CudaBackend::fill(Tensor t, float value) {
  expect_on_gpu({&t}, "fill");
  if (t.dtype() == DType::kI32) {
    cuda::fill(t.i32(), static_cast<int32_t>(value), t.numel(), context_);
  } else {
    cuda::fill(t.f32(), value, t.numel(), context_);
  }
}

void CudaBackend::synchronize() { CUDA_CHECK(cudaStreamSynchronize(stream())); }

void CudaBackend::matmul_forward(Tensor out, Tensor inp, Tensor weight, Tensor bias) {
  expect_on_gpu({&out, &inp, &weight, &bias}, "matmul_forward");
  int64_t N = rows(inp), C = cols(inp), OC = weight.dim(0);
  TS_ASSERT(weight.numel() == OC * C && out.numel() == N * OC, "matmul ", inp.shape_string(), " x ",
            weight.shape_string(), "^T -> ", out.shape_string());
  TS_ASSERT(!bias.defined() || bias.numel() == OC, "bias ", bias.shape_string());
  cuda::matmul_forward(out.f32(), inp.f32(), weight.f32(), f32_or_null(bias), N, C, OC, context_);
}

void CudaBackend::matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp,
                                  Tensor weight) {
  expect_on_gpu({&d_inp, &d_weight, &d_bias, &d_out, &inp, &weight}, "matmul_backward");
  int64_t N = rows(inp), C = cols(inp), OC = weight.dim(0);
  TS_ASSERT(d_out.numel() == N * OC && d_weight.numel() == OC * C, "matmul backward shapes");
  TS_ASSERT(!d_inp.defined() || d_inp.numel() == N * C, "d_inp ", d_inp.shape_string());
  TS_ASSERT(!d_bias.defined() || d_bias.numel() == OC, "d_bias ", d_bias.shape_string());
  cuda::matmul_backward(mutable_f32_or_null(d_inp), d_weight.f32(), mutable_f32_or_null(d_bias), d_out.f32(), inp.f32(),
                        weight.f32(), N, C, OC, context_);
}

void CudaBackend::layernorm_forward(Tensor out, Tensor mean, Tensor rstd, Tensor inp, Tensor weight, Tensor bias,
                                    float eps) {
  expect_on_gpu({&out, &mean, &rstd, &inp, &weight, &bias}, "layernorm_forward");
  int64_t N = rows(inp), C = cols(inp);
  expect_same_size(out, inp, "layernorm out");
  TS_ASSERT(mean.numel() == N && rstd.numel() == N && weight.numel() == C && bias.numel() == C, "layernorm shapes");
  cuda::layernorm_forward(out.f32(), mean.f32(), rstd.f32(), inp.f32(), weight.f32(), bias.f32(), eps, N, C, context_);
}

void CudaBackend::layernorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp,
                                     Tensor weight, Tensor mean, Tensor rstd) {
  expect_on_gpu({&d_inp, &d_weight, &d_bias, &d_out, &inp, &weight, &mean, &rstd}, "layernorm_backward");
  int64_t N = rows(inp), C = cols(inp);
  expect_same_size(d_inp, inp, "layernorm d_inp");
  expect_same_size(d_out, inp, "layernorm d_out");
  TS_ASSERT(d_weight.numel() == C && d_bias.numel() == C && mean.numel() == N && rstd.numel() == N,
            "layernorm backward shapes");
  cuda::layernorm_backward(d_inp.f32(), d_weight.f32(), d_bias.f32(), d_out.f32(), inp.f32(), weight.f32(), mean.f32(),
                           rstd.f32(), N, C, context_);
}

void CudaBackend::gelu_forward(Tensor out, Tensor inp) {
  expect_on_gpu({&out, &inp}, "gelu_forward");
  expect_same_size(out, inp, "gelu");
  cuda::gelu_forward(out.f32(), inp.f32(), inp.numel(), context_);
}

void CudaBackend::gelu_backward(Tensor d_inp, Tensor inp, Tensor d_out) {
  expect_on_gpu({&d_inp, &inp, &d_out}, "gelu_backward");
  expect_same_size(d_inp, inp, "gelu backward");
  expect_same_size(d_out, inp, "gelu backward");
  cuda::gelu_backward(d_inp.f32(), inp.f32(), d_out.f32(), inp.numel(), context_);
}

void CudaBackend::add(Tensor out, Tensor a, Tensor b) {
  expect_on_gpu({&out, &a, &b}, "add");
  expect_same_size(out, a, "add");
  expect_same_size(out, b, "add");
  cuda::add(out.f32(), a.f32(), b.f32(), out.numel(), context_);
}

void CudaBackend::attention_forward(Tensor out, Tensor probs, Tensor qkv, int n_head) {
  expect_on_gpu({&out, &probs, &qkv}, "attention_forward");
  TS_ASSERT(qkv.ndim() == 3 && qkv.dim(2) % (3 * n_head) == 0, "qkv ", qkv.shape_string());
  int64_t B = qkv.dim(0), T = qkv.dim(1), hs = qkv.dim(2) / (3 * n_head);
  TS_ASSERT(out.numel() == B * T * n_head * hs && probs.numel() == B * n_head * T * T, "attention shapes");
  cuda::attention_forward(out.f32(), probs.f32(), qkv.f32(), B, T, n_head, hs, context_);
}

void CudaBackend::attention_backward(Tensor d_qkv, Tensor d_probs, Tensor d_out, Tensor qkv, Tensor probs, int n_head) {
  expect_on_gpu({&d_qkv, &d_probs, &d_out, &qkv, &probs}, "attention_backward");
  TS_ASSERT(qkv.ndim() == 3 && qkv.dim(2) % (3 * n_head) == 0, "qkv ", qkv.shape_string());
  int64_t B = qkv.dim(0), T = qkv.dim(1), hs = qkv.dim(2) / (3 * n_head);
  expect_same_size(d_qkv, qkv, "attention d_qkv");
  TS_ASSERT(d_out.numel() == B * T * n_head * hs && d_probs.numel() == probs.numel(), "attention shapes");
  cuda::attention_backward(d_qkv.f32(), d_probs.f32(), d_out.f32(), qkv.f32(), probs.f32(), B, T, n_head, hs, context_);
}

void CudaBackend::embedding_forward(Tensor out, Tensor tokens, Tensor wte, Tensor wpe, int seq_len,
                                    int64_t vocab_start) {
  expect_on_gpu({&out, &tokens, &wte, &wpe}, "embedding_forward");
  int64_t N = tokens.numel(), C = cols(wte);
  TS_ASSERT(out.numel() == N * C && N % seq_len == 0, "embedding shapes");
  cuda::embedding_forward(out.f32(), tokens.i32(), wte.f32(), f32_or_null(wpe), N, C, wte.dim(0), seq_len, vocab_start,
                          context_);
}

void CudaBackend::embedding_backward(Tensor d_wte, Tensor d_wpe, Tensor d_out, Tensor tokens, int seq_len,
                                     int64_t vocab_start) {
  expect_on_gpu({&d_wte, &d_wpe, &d_out, &tokens}, "embedding_backward");
  int64_t N = tokens.numel(), C = cols(d_wte);
  TS_ASSERT(d_out.numel() == N * C, "embedding backward shapes");
  cuda::embedding_backward(d_wte.f32(), mutable_f32_or_null(d_wpe), d_out.f32(), tokens.i32(), N, C, d_wte.dim(0),
                           seq_len, vocab_start, context_);
}

void CudaBackend::cross_entropy_row_max(Tensor row_max, Tensor logits, int64_t valid_cols) {
  expect_on_gpu({&row_max, &logits}, "cross_entropy_row_max");
  TS_ASSERT(row_max.numel() == rows(logits), "row_max shape");
  cuda::cross_entropy_row_max(row_max.f32(), logits.f32(), rows(logits), cols(logits), valid_cols, context_);
}

void CudaBackend::cross_entropy_row_stats(Tensor sum_exp, Tensor target_logit, Tensor logits, Tensor row_max,
                                          Tensor targets, int64_t vocab_start, int64_t valid_cols) {
  expect_on_gpu({&sum_exp, &target_logit, &logits, &row_max, &targets}, "cross_entropy_row_stats");
  int64_t N = rows(logits);
  TS_ASSERT(sum_exp.numel() == N && target_logit.numel() == N && targets.numel() == N, "row stats shapes");
  cuda::cross_entropy_row_stats(sum_exp.f32(), target_logit.f32(), logits.f32(), row_max.f32(), targets.i32(), N,
                                cols(logits), vocab_start, valid_cols, context_);
}

void CudaBackend::cross_entropy_loss_backward(Tensor losses, Tensor logits, Tensor row_max, Tensor sum_exp,
                                              Tensor target_logit, Tensor targets, int64_t vocab_start,
                                              int64_t valid_cols, float d_scale) {
  expect_on_gpu({&losses, &logits, &row_max, &sum_exp, &target_logit, &targets}, "cross_entropy_loss_backward");
  int64_t N = rows(logits);
  TS_ASSERT(losses.numel() == N && targets.numel() == N, "loss shapes");
  cuda::cross_entropy_loss_backward(losses.f32(), logits.f32(), row_max.f32(), sum_exp.f32(), target_logit.f32(),
                                    targets.i32(), N, cols(logits), vocab_start, valid_cols, d_scale, context_);
}

void CudaBackend::adamw_update(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWStep& step) {
  expect_on_gpu({&param, &grad, &m, &v}, "adamw_update");
  expect_same_size(param, grad, "adamw grad");
  expect_same_size(param, m, "adamw m");
  expect_same_size(param, v, "adamw v");
  cuda::adamw_update(param.f32(), grad.f32(), m.f32(), v.f32(), param.numel(), step.lr, step.beta1, step.beta2,
                     step.eps, step.weight_decay, step.step, step.grad_scale, context_);
}

double CudaBackend::sum_of_squares(Tensor t) {
  expect_on_gpu({&t}, "sum_of_squares");
  return cuda::sum_of_squares(t.f32(), t.numel(), host_scalar_, context_);
}

void CudaBackend::scale(Tensor t, float factor) {
  expect_on_gpu({&t}, "scale");
  cuda::scale(t.f32(), factor, t.numel(), context_);
}

}  // namespace tessera

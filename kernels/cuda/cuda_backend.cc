// CudaBackend: shape and dtype checks (Note [Precision] in core/backend.h), and dispatch to the launchers in this
// folder with the storage type of the op's compute tensors.
#include "kernels/cuda/cuda_backend.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <set>
#include <tuple>

#include "kernels/cuda/adamw.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/cached_attention.h"
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dtype.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/layernorm.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/swiglu.h"

namespace tessera {

using cuda::data_as;

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

// The compute dtype of an op (Note [Precision]): f32 or bf16, shared by all its defined compute tensors.
DType compute_dtype(const char* op, std::initializer_list<const Tensor*> compute) {
  const Tensor* first = nullptr;
  for (const Tensor* t : compute) {
    if (!t->defined()) continue;
    if (first == nullptr) {
      first = t;
      TS_ASSERT(t->dtype() == DType::kF32 || t->dtype() == DType::kBF16, op, ": compute tensors are f32 or bf16; a ",
                t->shape_string(), " one is ", dtype_name(t->dtype()));
    }
    TS_ASSERT(t->dtype() == first->dtype(), op, ": all compute tensors of one op share a dtype (Note [Precision]); ",
              first->shape_string(), " is ", dtype_name(first->dtype()), ", ", t->shape_string(), " is ",
              dtype_name(t->dtype()));
  }
  TS_ASSERT(first != nullptr, op, ": no compute tensor");
  return first->dtype();
}

// Tensors of a kind with a fixed dtype: parameter gradients and statistics (f32), token ids (i32).
void expect_dtype(DType dtype, const char* kind, std::initializer_list<const Tensor*> tensors, const char* op) {
  for (const Tensor* t : tensors) {
    TS_ASSERT(!t->defined() || t->dtype() == dtype, op, ": ", kind, " are ", dtype_name(dtype), "; a ",
              t->shape_string(), " one is ", dtype_name(t->dtype()), " (Note [Precision])");
  }
}

void expect_statistics(std::initializer_list<const Tensor*> tensors, const char* op) {
  expect_dtype(DType::kF32, "statistics", tensors, op);
}
void expect_gradients(std::initializer_list<const Tensor*> tensors, const char* op) {
  expect_dtype(DType::kF32, "parameter gradients", tensors, op);
}
void expect_tokens(std::initializer_list<const Tensor*> tensors, const char* op) {
  expect_dtype(DType::kI32, "token ids", tensors, op);
}

// The heads of a packed qkv[..., (H + 2*KV)*hs] (core/backend.h): checks the counts and returns hs.
int64_t qkv_head_size(const Tensor& qkv, int n_head, int n_kv_head, const char* op) {
  TS_ASSERT(n_head >= 1 && n_kv_head >= 1 && n_head % n_kv_head == 0, op, ": ", n_head, " query heads and ", n_kv_head,
            " key/value heads (the second must divide the first)");
  const int64_t width = qkv.dim(qkv.ndim() - 1), heads = n_head + 2 * static_cast<int64_t>(n_kv_head);
  TS_ASSERT(width % heads == 0, op, ": qkv ", qkv.shape_string(), " is not ", heads, " heads wide");
  return width / heads;
}

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
  host_staging_capacity_ = 64;
  CUDA_CHECK(cudaMallocHost(&host_staging_, sizeof(double) * host_staging_capacity_));
  const char* cudnn_setting = std::getenv("TESSERA_CUDNN_ATTENTION");
  cudnn_attention_disabled_ = cudnn_setting != nullptr && std::strcmp(cudnn_setting, "0") == 0;
}

// Note [Attention choice]
// bf16 attention goes to cuDNN's fused flash attention (kernels/cuda/cudnn_attention.h) when the build has cuDNN 9
// and cuDNN has an engine for the shape; f32 attention, shapes cuDNN refuses (hs not a multiple of 8 or over 128,
// T = 1, GPUs before sm_80), unaligned pointers and TESSERA_CUDNN_ATTENTION=0 take Tessera's own flash-style
// kernels (attention.cu). Both follow the same contract (out and lse; backward from qkv, out, lse), so the
// forward of one and the backward of the other could even be mixed; the choice is made per shape and is the
// same for a shape's forward and backward. A refused shape is reported once on stderr with cuDNN's reason.
bool CudaBackend::use_cudnn_attention(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs,
                                      std::initializer_list<const void*> pointers) {
#if defined(TESSERA_HAS_CUDNN)
  if (cudnn_attention_disabled_) return false;
  for (const void* p : pointers)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  if (!cudnn_attention_) cudnn_attention_ = std::make_unique<cuda::CudnnAttention>(allocator_);
  if (cudnn_attention_->supported(B, T, H, KV, hs)) return true;
  static std::set<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>> reported;
  if (reported.insert({B, T, H, KV, hs}).second) {
    std::fprintf(stderr,
                 "tessera: cuDNN attention does not take B=%lld T=%lld H=%lld KV=%lld hs=%lld (%s); using Tessera's "
                 "attention kernels for it\n",
                 static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(H),
                 static_cast<long long>(KV), static_cast<long long>(hs), cudnn_attention_->reason().c_str());
  }
  return false;
#else
  (void)B, (void)T, (void)H, (void)KV, (void)hs, (void)pointers;
  return false;
#endif
}

void CudaBackend::stop_cudnn_attention(const std::exception& error) {
  // Both implementations follow the same contract, so the op is redone with Tessera's kernels. An error that
  // poisoned the CUDA context (an illegal address) fails those too and surfaces there.
  std::fprintf(stderr,
               "tessera: cuDNN attention failed at run time (%s); using Tessera's attention kernels from now "
               "on\n",
               error.what());
  cudnn_attention_disabled_ = true;
}

CudaBackend::~CudaBackend() {
  // Errors cannot be reported from here; whatever failed was reported by the op that saw it.
  cudaStreamSynchronize(stream_.get());
  cudaFreeHost(host_staging_);
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
  expect_same_size(dst, src, "copy");
  if (dst.numel() == 0) return;
  if (dst.dtype() == src.dtype()) {
    if (dst.data() == src.data()) return;
    CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), dst.bytes(), cudaMemcpyDeviceToDevice, stream()));
    return;
  }
  if (dst.dtype() == DType::kBF16 && src.dtype() == DType::kF32) {
    cuda::convert(data_as<cuda::bf16>(dst), data_as<float>(src), dst.numel(), context_);
  } else if (dst.dtype() == DType::kF32 && src.dtype() == DType::kBF16) {
    cuda::convert(data_as<float>(dst), data_as<cuda::bf16>(src), dst.numel(), context_);
  } else {
    TS_ASSERT(false, "copy converts between f32 and bf16 only, not ", dtype_name(src.dtype()), " to ",
              dtype_name(dst.dtype()));
  }
}

void CudaBackend::fill(Tensor t, float value) {
  expect_on_gpu({&t}, "fill");
  switch (t.dtype()) {
    case DType::kI32:
      cuda::fill(t.i32(), static_cast<int32_t>(value), t.numel(), context_);
      break;
    case DType::kF32:
      cuda::fill(data_as<float>(t), value, t.numel(), context_);
      break;
    case DType::kBF16:
      cuda::fill(data_as<cuda::bf16>(t), value, t.numel(), context_);
      break;
  }
}

void CudaBackend::synchronize() { CUDA_CHECK(cudaStreamSynchronize(stream())); }

void CudaBackend::matmul_forward(Tensor out, Tensor inp, Tensor weight, Tensor bias) {
  expect_on_gpu({&out, &inp, &weight, &bias}, "matmul_forward");
  const DType dtype = compute_dtype("matmul_forward", {&out, &inp, &weight, &bias});
  int64_t N = rows(inp), C = cols(inp), OC = weight.dim(0);
  TS_ASSERT(weight.numel() == OC * C && out.numel() == N * OC, "matmul ", inp.shape_string(), " x ",
            weight.shape_string(), "^T -> ", out.shape_string());
  TS_ASSERT(!bias.defined() || bias.numel() == OC, "bias ", bias.shape_string());
  cuda::dispatch_compute(dtype, "matmul_forward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::matmul_forward(data_as<T>(out), data_as<T>(inp), data_as<T>(weight), data_as<T>(bias), N, C, OC, context_);
  });
}

void CudaBackend::matmul_gelu_forward(Tensor out_gelu, Tensor pre_gelu, Tensor inp, Tensor weight, Tensor bias) {
  expect_on_gpu({&out_gelu, &pre_gelu, &inp, &weight, &bias}, "matmul_gelu_forward");
  const DType dtype = compute_dtype("matmul_gelu_forward", {&out_gelu, &pre_gelu, &inp, &weight, &bias});
  int64_t N = rows(inp), C = cols(inp), OC = weight.dim(0);
  TS_ASSERT(weight.numel() == OC * C && pre_gelu.numel() == N * OC, "matmul ", inp.shape_string(), " x ",
            weight.shape_string(), "^T -> ", pre_gelu.shape_string());
  expect_same_size(out_gelu, pre_gelu, "matmul_gelu_forward out_gelu");
  TS_ASSERT(!bias.defined() || bias.numel() == OC, "bias ", bias.shape_string());
  cuda::dispatch_compute(dtype, "matmul_gelu_forward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::matmul_gelu_forward(data_as<T>(out_gelu), data_as<T>(pre_gelu), data_as<T>(inp), data_as<T>(weight),
                              data_as<T>(bias), N, C, OC, context_);
  });
}

void CudaBackend::matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp,
                                  Tensor weight) {
  expect_on_gpu({&d_inp, &d_weight, &d_bias, &d_out, &inp, &weight}, "matmul_backward");
  const DType dtype = compute_dtype("matmul_backward", {&d_inp, &d_out, &inp, &weight});
  expect_gradients({&d_weight, &d_bias}, "matmul_backward");
  int64_t N = rows(inp), C = cols(inp), OC = weight.dim(0);
  TS_ASSERT(d_out.numel() == N * OC && d_weight.numel() == OC * C, "matmul backward shapes");
  TS_ASSERT(!d_inp.defined() || d_inp.numel() == N * C, "d_inp ", d_inp.shape_string());
  TS_ASSERT(!d_bias.defined() || d_bias.numel() == OC, "d_bias ", d_bias.shape_string());
  cuda::dispatch_compute(dtype, "matmul_backward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::matmul_backward(data_as<T>(d_inp), data_as<float>(d_weight), data_as<float>(d_bias), data_as<T>(d_out),
                          data_as<T>(inp), data_as<T>(weight), N, C, OC, context_);
  });
}

void CudaBackend::layernorm_forward(Tensor out, Tensor mean, Tensor rstd, Tensor inp, Tensor weight, Tensor bias,
                                    float eps) {
  expect_on_gpu({&out, &mean, &rstd, &inp, &weight, &bias}, "layernorm_forward");
  const DType dtype = compute_dtype("layernorm_forward", {&out, &inp, &weight, &bias});
  expect_statistics({&mean, &rstd}, "layernorm_forward");
  int64_t N = rows(inp), C = cols(inp);
  expect_same_size(out, inp, "layernorm out");
  TS_ASSERT(mean.numel() == N && rstd.numel() == N && weight.numel() == C && bias.numel() == C, "layernorm shapes");
  cuda::dispatch_compute(dtype, "layernorm_forward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::layernorm_forward(data_as<T>(out), data_as<float>(mean), data_as<float>(rstd), data_as<T>(inp),
                            data_as<T>(weight), data_as<T>(bias), eps, N, C, context_);
  });
}

void CudaBackend::residual_layernorm_forward(Tensor residual_out, Tensor out, Tensor mean, Tensor rstd, Tensor a,
                                             Tensor b, Tensor weight, Tensor bias, float eps) {
  expect_on_gpu({&residual_out, &out, &mean, &rstd, &a, &b, &weight, &bias}, "residual_layernorm_forward");
  const DType dtype = compute_dtype("residual_layernorm_forward", {&residual_out, &out, &a, &b, &weight, &bias});
  expect_statistics({&mean, &rstd}, "residual_layernorm_forward");
  int64_t N = rows(a), C = cols(a);
  expect_same_size(b, a, "residual_layernorm b");
  expect_same_size(residual_out, a, "residual_layernorm residual_out");
  expect_same_size(out, a, "residual_layernorm out");
  TS_ASSERT(mean.numel() == N && rstd.numel() == N && weight.numel() == C && bias.numel() == C,
            "residual_layernorm shapes");
  TS_ASSERT(out.data() != residual_out.data() && out.data() != a.data() && out.data() != b.data(),
            "residual_layernorm_forward: out may not alias residual_out, a or b");
  cuda::dispatch_compute(dtype, "residual_layernorm_forward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::residual_layernorm_forward(data_as<T>(residual_out), data_as<T>(out), data_as<float>(mean),
                                     data_as<float>(rstd), data_as<T>(a), data_as<T>(b), data_as<T>(weight),
                                     data_as<T>(bias), eps, N, C, context_);
  });
}

void CudaBackend::layernorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp,
                                     Tensor weight, Tensor mean, Tensor rstd) {
  expect_on_gpu({&d_inp, &d_weight, &d_bias, &d_out, &inp, &weight, &mean, &rstd}, "layernorm_backward");
  const DType dtype = compute_dtype("layernorm_backward", {&d_inp, &d_out, &inp, &weight});
  expect_gradients({&d_weight, &d_bias}, "layernorm_backward");
  expect_statistics({&mean, &rstd}, "layernorm_backward");
  int64_t N = rows(inp), C = cols(inp);
  expect_same_size(d_inp, inp, "layernorm d_inp");
  expect_same_size(d_out, inp, "layernorm d_out");
  TS_ASSERT(d_weight.numel() == C && d_bias.numel() == C && mean.numel() == N && rstd.numel() == N,
            "layernorm backward shapes");
  cuda::dispatch_compute(dtype, "layernorm_backward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::layernorm_backward(data_as<T>(d_inp), data_as<float>(d_weight), data_as<float>(d_bias), data_as<T>(d_out),
                             data_as<T>(inp), data_as<T>(weight), data_as<float>(mean), data_as<float>(rstd), N, C,
                             context_);
  });
}

void CudaBackend::rmsnorm_forward(Tensor out, Tensor rstd, Tensor inp, Tensor weight, float eps) {
  expect_on_gpu({&out, &rstd, &inp, &weight}, "rmsnorm_forward");
  const DType dtype = compute_dtype("rmsnorm_forward", {&out, &inp, &weight});
  expect_statistics({&rstd}, "rmsnorm_forward");
  int64_t N = rows(inp), C = cols(inp);
  expect_same_size(out, inp, "rmsnorm out");
  TS_ASSERT(rstd.numel() == N && weight.numel() == C, "rmsnorm shapes: rstd ", rstd.shape_string(), ", weight ",
            weight.shape_string(), ", inp ", inp.shape_string());
  cuda::dispatch_compute(dtype, "rmsnorm_forward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::rmsnorm_forward(data_as<T>(out), data_as<float>(rstd), data_as<T>(inp), data_as<T>(weight), eps, N, C,
                          context_);
  });
}

void CudaBackend::residual_rmsnorm_forward(Tensor residual_out, Tensor out, Tensor rstd, Tensor a, Tensor b,
                                           Tensor weight, float eps) {
  expect_on_gpu({&residual_out, &out, &rstd, &a, &b, &weight}, "residual_rmsnorm_forward");
  const DType dtype = compute_dtype("residual_rmsnorm_forward", {&residual_out, &out, &a, &b, &weight});
  expect_statistics({&rstd}, "residual_rmsnorm_forward");
  int64_t N = rows(a), C = cols(a);
  expect_same_size(b, a, "residual_rmsnorm b");
  expect_same_size(residual_out, a, "residual_rmsnorm residual_out");
  expect_same_size(out, a, "residual_rmsnorm out");
  TS_ASSERT(rstd.numel() == N && weight.numel() == C, "residual_rmsnorm shapes");
  TS_ASSERT(out.data() != residual_out.data() && out.data() != a.data() && out.data() != b.data(),
            "residual_rmsnorm_forward: out may not alias residual_out, a or b");
  cuda::dispatch_compute(dtype, "residual_rmsnorm_forward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::residual_rmsnorm_forward(data_as<T>(residual_out), data_as<T>(out), data_as<float>(rstd), data_as<T>(a),
                                   data_as<T>(b), data_as<T>(weight), eps, N, C, context_);
  });
}

void CudaBackend::rmsnorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight,
                                   Tensor rstd) {
  expect_on_gpu({&d_inp, &d_weight, &d_out, &inp, &weight, &rstd}, "rmsnorm_backward");
  const DType dtype = compute_dtype("rmsnorm_backward", {&d_inp, &d_out, &inp, &weight});
  expect_gradients({&d_weight}, "rmsnorm_backward");
  expect_statistics({&rstd}, "rmsnorm_backward");
  int64_t N = rows(inp), C = cols(inp);
  expect_same_size(d_inp, inp, "rmsnorm d_inp");
  expect_same_size(d_out, inp, "rmsnorm d_out");
  TS_ASSERT(d_weight.numel() == C && weight.numel() == C && rstd.numel() == N, "rmsnorm backward shapes");
  cuda::dispatch_compute(dtype, "rmsnorm_backward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::rmsnorm_backward(data_as<T>(d_inp), data_as<float>(d_weight), data_as<T>(d_out), data_as<T>(inp),
                           data_as<T>(weight), data_as<float>(rstd), N, C, context_);
  });
}

void CudaBackend::gelu_forward(Tensor out, Tensor inp) {
  expect_on_gpu({&out, &inp}, "gelu_forward");
  const DType dtype = compute_dtype("gelu_forward", {&out, &inp});
  expect_same_size(out, inp, "gelu");
  cuda::dispatch_compute(dtype, "gelu_forward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::gelu_forward(data_as<T>(out), data_as<T>(inp), inp.numel(), context_);
  });
}

void CudaBackend::gelu_backward(Tensor d_inp, Tensor inp, Tensor d_out) {
  expect_on_gpu({&d_inp, &inp, &d_out}, "gelu_backward");
  const DType dtype = compute_dtype("gelu_backward", {&d_inp, &inp, &d_out});
  expect_same_size(d_inp, inp, "gelu backward");
  expect_same_size(d_out, inp, "gelu backward");
  cuda::dispatch_compute(dtype, "gelu_backward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::gelu_backward(data_as<T>(d_inp), data_as<T>(inp), data_as<T>(d_out), inp.numel(), context_);
  });
}

void CudaBackend::add(Tensor out, Tensor a, Tensor b) {
  expect_on_gpu({&out, &a, &b}, "add");
  const DType dtype = compute_dtype("add", {&out, &a, &b});
  expect_same_size(out, a, "add");
  expect_same_size(out, b, "add");
  cuda::dispatch_compute(dtype, "add", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::add(data_as<T>(out), data_as<T>(a), data_as<T>(b), out.numel(), context_);
  });
}

void CudaBackend::swiglu_forward(Tensor out, Tensor gate_up) {
  expect_on_gpu({&out, &gate_up}, "swiglu_forward");
  const DType dtype = compute_dtype("swiglu_forward", {&out, &gate_up});
  int64_t N = rows(gate_up), F = cols(gate_up) / 2;
  TS_ASSERT(cols(gate_up) % 2 == 0 && out.numel() == N * F, "swiglu: out ", out.shape_string(), ", gate_up ",
            gate_up.shape_string());
  cuda::dispatch_compute(dtype, "swiglu_forward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::swiglu_forward(data_as<T>(out), data_as<T>(gate_up), N, F, context_);
  });
}

void CudaBackend::swiglu_backward(Tensor d_gate_up, Tensor d_out, Tensor gate_up) {
  expect_on_gpu({&d_gate_up, &d_out, &gate_up}, "swiglu_backward");
  const DType dtype = compute_dtype("swiglu_backward", {&d_gate_up, &d_out, &gate_up});
  int64_t N = rows(gate_up), F = cols(gate_up) / 2;
  TS_ASSERT(cols(gate_up) % 2 == 0 && d_out.numel() == N * F, "swiglu backward: d_out ", d_out.shape_string(),
            ", gate_up ", gate_up.shape_string());
  expect_same_size(d_gate_up, gate_up, "swiglu d_gate_up");
  cuda::dispatch_compute(dtype, "swiglu_backward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::swiglu_backward(data_as<T>(d_gate_up), data_as<T>(d_out), data_as<T>(gate_up), N, F, context_);
  });
}

void CudaBackend::rope_forward(Tensor qkv, int n_head, int n_kv_head, int seq_len, float theta) {
  expect_on_gpu({&qkv}, "rope_forward");
  const DType dtype = compute_dtype("rope_forward", {&qkv});
  const int64_t hs = qkv_head_size(qkv, n_head, n_kv_head, "rope_forward");
  TS_ASSERT(hs % 2 == 0 && seq_len >= 1 && rows(qkv) % seq_len == 0, "rope_forward: head size ", hs, ", seq_len ",
            seq_len, ", qkv ", qkv.shape_string());
  cuda::dispatch_compute(dtype, "rope_forward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::rope_forward(data_as<T>(qkv), rows(qkv), n_head, n_kv_head, hs, seq_len, theta, context_);
  });
}

void CudaBackend::rope_backward(Tensor d_qkv, int n_head, int n_kv_head, int seq_len, float theta) {
  expect_on_gpu({&d_qkv}, "rope_backward");
  const DType dtype = compute_dtype("rope_backward", {&d_qkv});
  const int64_t hs = qkv_head_size(d_qkv, n_head, n_kv_head, "rope_backward");
  TS_ASSERT(hs % 2 == 0 && seq_len >= 1 && rows(d_qkv) % seq_len == 0, "rope_backward: head size ", hs, ", seq_len ",
            seq_len, ", d_qkv ", d_qkv.shape_string());
  cuda::dispatch_compute(dtype, "rope_backward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::rope_backward(data_as<T>(d_qkv), rows(d_qkv), n_head, n_kv_head, hs, seq_len, theta, context_);
  });
}

void CudaBackend::rope_forward_at(Tensor qkv, int n_head, int n_kv_head, int seq_len, int position, float theta) {
  expect_on_gpu({&qkv}, "rope_forward_at");
  const DType dtype = compute_dtype("rope_forward_at", {&qkv});
  const int64_t hs = qkv_head_size(qkv, n_head, n_kv_head, "rope_forward_at");
  TS_ASSERT(hs % 2 == 0 && seq_len >= 1 && rows(qkv) % seq_len == 0 && position >= 0, "rope_forward_at: head size ", hs,
            ", seq_len ", seq_len, ", position ", position, ", qkv ", qkv.shape_string());
  cuda::dispatch_compute(dtype, "rope_forward_at", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::rope_forward_at(data_as<T>(qkv), rows(qkv), n_head, n_kv_head, hs, seq_len, position, theta, context_);
  });
}

void CudaBackend::cached_attention_forward(Tensor out, Tensor qkv, Tensor k_cache, Tensor v_cache, int n_head,
                                           int n_kv_head, int position) {
  expect_on_gpu({&out, &qkv, &k_cache, &v_cache}, "cached_attention_forward");
  const DType dtype = compute_dtype("cached_attention_forward", {&out, &qkv, &k_cache, &v_cache});
  TS_ASSERT(qkv.ndim() == 3 && k_cache.ndim() == 4, "cached_attention_forward: qkv ", qkv.shape_string(), ", cache ",
            k_cache.shape_string());
  const int64_t hs = qkv_head_size(qkv, n_head, n_kv_head, "cached_attention_forward");
  const int64_t B = qkv.dim(0), Tq = qkv.dim(1), T_cache = k_cache.dim(1);
  TS_ASSERT(k_cache.dim(0) == B && k_cache.dim(2) == n_kv_head && k_cache.dim(3) == hs &&
                v_cache.numel() == k_cache.numel() && out.numel() == B * Tq * n_head * hs && position >= 0 &&
                position + Tq <= T_cache && position + Tq <= cuda::kMaxCachedPositions && B <= 65535 && n_head <= 65535,
            "cached_attention_forward shapes: out ", out.shape_string(), ", qkv ", qkv.shape_string(), ", cache ",
            k_cache.shape_string(), ", position ", position);
  cuda::dispatch_compute(dtype, "cached_attention_forward", [&]<typename Tag>(Tag) {
    using S = typename Tag::type;
    cuda::cached_attention_forward(data_as<S>(out), data_as<S>(qkv), data_as<S>(k_cache), data_as<S>(v_cache), B, Tq,
                                   T_cache, n_head, n_kv_head, hs, position, context_);
  });
}

void CudaBackend::attention_forward(Tensor out, Tensor lse, Tensor qkv, int n_head, int n_kv_head) {
  expect_on_gpu({&out, &lse, &qkv}, "attention_forward");
  const DType dtype = compute_dtype("attention_forward", {&out, &qkv});
  expect_statistics({&lse}, "attention_forward");
  TS_ASSERT(qkv.ndim() == 3, "attention_forward: qkv ", qkv.shape_string(), " is not [B, T, width]");
  const int64_t hs = qkv_head_size(qkv, n_head, n_kv_head, "attention_forward");
  const int64_t B = qkv.dim(0), T = qkv.dim(1), H = n_head, KV = n_kv_head;
  TS_ASSERT(out.numel() == B * T * H * hs && lse.numel() == B * H * T, "attention shapes: out ", out.shape_string(),
            ", lse ", lse.shape_string(), ", qkv ", qkv.shape_string());
  if (dtype == DType::kBF16 && use_cudnn_attention(B, T, H, KV, hs, {out.data(), lse.data(), qkv.data()})) {
#if defined(TESSERA_HAS_CUDNN)
    try {
      cudnn_attention_->forward(out.data(), data_as<float>(lse), qkv.data(), B, T, H, KV, hs, stream());
      last_attention_engine_ = "cudnn";
      return;
    } catch (const CudaError& error) {
      stop_cudnn_attention(error);
    }
#endif
  }
  last_attention_engine_ = "tessera";
  cuda::dispatch_compute(dtype, "attention_forward", [&]<typename Tag>(Tag) {
    using S = typename Tag::type;
    cuda::attention_forward(data_as<S>(out), data_as<float>(lse), data_as<S>(qkv), B, T, H, KV, hs, context_);
  });
}

void CudaBackend::attention_backward(Tensor d_qkv, Tensor d_out, Tensor qkv, Tensor out, Tensor lse, int n_head,
                                     int n_kv_head) {
  expect_on_gpu({&d_qkv, &d_out, &qkv, &out, &lse}, "attention_backward");
  const DType dtype = compute_dtype("attention_backward", {&d_qkv, &d_out, &qkv, &out});
  expect_statistics({&lse}, "attention_backward");
  TS_ASSERT(qkv.ndim() == 3, "attention_backward: qkv ", qkv.shape_string(), " is not [B, T, width]");
  const int64_t hs = qkv_head_size(qkv, n_head, n_kv_head, "attention_backward");
  const int64_t B = qkv.dim(0), T = qkv.dim(1), H = n_head, KV = n_kv_head;
  expect_same_size(d_qkv, qkv, "attention d_qkv");
  TS_ASSERT(d_out.numel() == B * T * H * hs && out.numel() == d_out.numel() && lse.numel() == B * H * T,
            "attention backward shapes: d_out ", d_out.shape_string(), ", out ", out.shape_string(), ", lse ",
            lse.shape_string());
  if (dtype == DType::kBF16 &&
      use_cudnn_attention(B, T, H, KV, hs, {d_qkv.data(), d_out.data(), qkv.data(), out.data(), lse.data()})) {
#if defined(TESSERA_HAS_CUDNN)
    try {
      cudnn_attention_->backward(d_qkv.data(), d_out.data(), qkv.data(), out.data(), data_as<float>(lse), B, T, H, KV,
                                 hs, stream());
      last_attention_engine_ = "cudnn";
      return;
    } catch (const CudaError& error) {
      stop_cudnn_attention(error);
    }
#endif
  }
  last_attention_engine_ = "tessera";
  cuda::dispatch_compute(dtype, "attention_backward", [&]<typename Tag>(Tag) {
    using S = typename Tag::type;
    cuda::attention_backward(data_as<S>(d_qkv), data_as<S>(d_out), data_as<S>(qkv), data_as<S>(out),
                             data_as<float>(lse), B, T, H, KV, hs, context_);
  });
}

void CudaBackend::embedding_forward(Tensor out, Tensor tokens, Tensor wte, Tensor wpe, int seq_len,
                                    int64_t vocab_start) {
  expect_on_gpu({&out, &tokens, &wte, &wpe}, "embedding_forward");
  const DType dtype = compute_dtype("embedding_forward", {&out, &wte, &wpe});
  expect_tokens({&tokens}, "embedding_forward");
  int64_t N = tokens.numel(), C = cols(wte);
  TS_ASSERT(seq_len >= 1 && out.numel() == N * C && N % seq_len == 0, "embedding shapes");
  TS_ASSERT(!wpe.defined() || wpe.numel() >= seq_len * C, "wpe ", wpe.shape_string(), " for seq_len ", seq_len);
  cuda::dispatch_compute(dtype, "embedding_forward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::embedding_forward(data_as<T>(out), tokens.i32(), data_as<T>(wte), data_as<T>(wpe), N, C, wte.dim(0), seq_len,
                            vocab_start, context_);
  });
}

void CudaBackend::embedding_backward(Tensor d_wte, Tensor d_wpe, Tensor d_out, Tensor tokens, int seq_len,
                                     int64_t vocab_start) {
  expect_on_gpu({&d_wte, &d_wpe, &d_out, &tokens}, "embedding_backward");
  const DType dtype = compute_dtype("embedding_backward", {&d_out});
  expect_gradients({&d_wte, &d_wpe}, "embedding_backward");
  expect_tokens({&tokens}, "embedding_backward");
  int64_t N = tokens.numel(), C = cols(d_wte);
  TS_ASSERT(seq_len >= 1 && d_out.numel() == N * C && N % seq_len == 0, "embedding backward shapes");
  TS_ASSERT(!d_wpe.defined() || d_wpe.numel() >= seq_len * C, "d_wpe ", d_wpe.shape_string(), " for seq_len ", seq_len);
  cuda::dispatch_compute(dtype, "embedding_backward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::embedding_backward(data_as<float>(d_wte), data_as<float>(d_wpe), data_as<T>(d_out), tokens.i32(), N, C,
                             d_wte.dim(0), seq_len, vocab_start, context_);
  });
}

void CudaBackend::cross_entropy_row_max(Tensor row_max, Tensor logits, int64_t valid_cols) {
  expect_on_gpu({&row_max, &logits}, "cross_entropy_row_max");
  const DType dtype = compute_dtype("cross_entropy_row_max", {&logits});
  expect_statistics({&row_max}, "cross_entropy_row_max");
  TS_ASSERT(row_max.numel() == rows(logits), "row_max shape");
  cuda::dispatch_compute(dtype, "cross_entropy_row_max", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::cross_entropy_row_max(data_as<float>(row_max), data_as<T>(logits), rows(logits), cols(logits), valid_cols,
                                context_);
  });
}

void CudaBackend::cross_entropy_row_stats(Tensor sum_exp, Tensor target_logit, Tensor logits, Tensor row_max,
                                          Tensor targets, int64_t vocab_start, int64_t valid_cols) {
  expect_on_gpu({&sum_exp, &target_logit, &logits, &row_max, &targets}, "cross_entropy_row_stats");
  const DType dtype = compute_dtype("cross_entropy_row_stats", {&logits});
  expect_statistics({&sum_exp, &target_logit, &row_max}, "cross_entropy_row_stats");
  expect_tokens({&targets}, "cross_entropy_row_stats");
  int64_t N = rows(logits);
  TS_ASSERT(sum_exp.numel() == N && target_logit.numel() == N && targets.numel() == N && row_max.numel() == N,
            "row stats shapes");
  cuda::dispatch_compute(dtype, "cross_entropy_row_stats", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::cross_entropy_row_stats(data_as<float>(sum_exp), data_as<float>(target_logit), data_as<T>(logits),
                                  data_as<float>(row_max), targets.i32(), N, cols(logits), vocab_start, valid_cols,
                                  context_);
  });
}

void CudaBackend::cross_entropy_loss_backward(Tensor losses, Tensor logits, Tensor row_max, Tensor sum_exp,
                                              Tensor target_logit, Tensor targets, Tensor weights, int64_t vocab_start,
                                              int64_t valid_cols, float d_scale) {
  expect_on_gpu({&losses, &logits, &row_max, &sum_exp, &target_logit, &targets, &weights},
                "cross_entropy_loss_backward");
  if (weights.defined()) expect_statistics({&weights}, "cross_entropy_loss_backward");
  const DType dtype = compute_dtype("cross_entropy_loss_backward", {&logits});
  expect_statistics({&losses, &row_max, &sum_exp, &target_logit}, "cross_entropy_loss_backward");
  expect_tokens({&targets}, "cross_entropy_loss_backward");
  int64_t N = rows(logits);
  TS_ASSERT(losses.numel() == N && targets.numel() == N && row_max.numel() == N && sum_exp.numel() == N &&
                target_logit.numel() == N,
            "loss shapes");
  TS_ASSERT(!weights.defined() || weights.numel() == N, "loss weight shape");
  const float* weight_data = weights.defined() ? data_as<float>(weights) : nullptr;
  cuda::dispatch_compute(dtype, "cross_entropy_loss_backward", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::cross_entropy_loss_backward(data_as<float>(losses), data_as<T>(logits), data_as<float>(row_max),
                                      data_as<float>(sum_exp), data_as<float>(target_logit), targets.i32(), weight_data,
                                      N, cols(logits), vocab_start, valid_cols, d_scale, context_);
  });
}

void CudaBackend::adamw_update(Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWStep& step,
                               Tensor param_copy) {
  expect_on_gpu({&param, &grad, &m, &v, &param_copy}, "adamw_update");
  expect_dtype(DType::kF32, "master weights, gradients and moments", {&param, &grad, &m, &v}, "adamw_update");
  expect_dtype(DType::kBF16, "parameter compute copies", {&param_copy}, "adamw_update");
  expect_same_size(param, grad, "adamw grad");
  expect_same_size(param, m, "adamw m");
  expect_same_size(param, v, "adamw v");
  if (param_copy.defined()) expect_same_size(param, param_copy, "adamw param_copy");
  cuda::adamw_update(param.f32(), grad.f32(), m.f32(), v.f32(), param.numel(), step.lr, step.beta1, step.beta2,
                     step.eps, step.weight_decay, step.step, step.grad_scale, data_as<cuda::bf16>(param_copy),
                     context_);
}

double CudaBackend::sum_of_squares(Tensor t) {
  expect_on_gpu({&t}, "sum_of_squares");
  compute_dtype("sum_of_squares", {&t});  // f32 or bf16
  return cuda::sum_of_squares(t, host_staging_, context_);
}

void CudaBackend::sum_of_squares_many(const Tensor* tensors, int count, double* sums) {
  if (count <= 0) return;
  for (int i = 0; i < count; ++i) {
    expect_on_gpu({&tensors[i]}, "sum_of_squares_many");
    compute_dtype("sum_of_squares_many", {&tensors[i]});
  }
  if (count > host_staging_capacity_) {
    // Every use of the staging memory has finished: each one waited for the stream before returning.
    CUDA_CHECK(cudaFreeHost(host_staging_));
    host_staging_ = nullptr;
    host_staging_capacity_ = 0;
    CUDA_CHECK(cudaMallocHost(&host_staging_, sizeof(double) * static_cast<size_t>(count)));
    host_staging_capacity_ = count;
  }
  cuda::sum_of_squares_many(tensors, count, sums, host_staging_, context_);
}

void CudaBackend::scale(Tensor t, float factor) {
  expect_on_gpu({&t}, "scale");
  const DType dtype = compute_dtype("scale", {&t});
  cuda::dispatch_compute(dtype, "scale", [&]<typename Tag>(Tag) {
    using T = typename Tag::type;
    cuda::scale(data_as<T>(t), factor, t.numel(), context_);
  });
}

}  // namespace tessera

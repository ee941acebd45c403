// CudaBackend: the Backend on one NVIDIA GPU, f32 or bf16 compute tensors (Note [Precision] in core/backend.h):
// every op takes its compute tensors in either dtype (one dtype per call), parameter gradients, statistics and
// optimizer state in f32, token ids in i32, and computes in f32 whatever the storage. Matrix products through
// cuBLASLt (f32 compute; fused bias, bias-gradient and GELU epilogues where cuBLASLt takes them), custom kernels
// for everything else: fused residual + LayerNorm and residual + RMSNorm, RoPE, SwiGLU, flash-style grouped-query
// attention (no [T, T] matrix), the three cross-entropy passes (the probabilities are never stored), AdamW writing
// the bf16 compute copy, a sorted, atomic-free embedding backward. See the launchers in this folder.
//
// Streams: every op is issued to the backend's own non-blocking stream (stream()) and returns without waiting,
// except the ones core/backend.h marks as synchronizing, which wait for that stream:
//   allocate, deallocate    do not wait: memory is reused in stream order (Note [Stream-ordered reuse] in
//                           caching_allocator.h); allocate may call cudaMalloc while the cache is cold
//   copy_from_host          waits until the copy is done (the host buffer may be reused at once)
//   copy_to_host            waits until everything issued before it, and the copy, are done
//   copy, fill              are issued to the stream like any other op: no host code can tell the difference,
//                           since the host reads device memory only through copy_to_host
//   sum_of_squares(_many)   wait for the stream once (they return host values)
//   synchronize             waits for the stream
// Other streams (a NCCL process group's) order themselves against stream() with events.
//
// Tensors passed to any op must be CUDA tensors from this backend's allocate(). Thread-safety: one thread at a
// time; the calling thread's current device must be this backend's device (the constructor sets it).
#pragma once

#include <cuda_runtime.h>

#include <exception>
#include <memory>
#include <string>

#include "core/backend.h"
#include "kernels/cuda/caching_allocator.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/cudnn_attention.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/gemm.h"

namespace tessera {

class CudaBackend final : public Backend {
 public:
  // Uses GPU `device` and makes it the calling thread's current device. Creates the stream, the cuBLASLt
  // handle and its workspace. Throws CudaError if the device cannot be used.
  explicit CudaBackend(int device);
  // Waits for the stream, then releases everything (device memory included).
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  Device device() const override { return Device::kCuda; }
  const char* name() const override { return "cuda"; }
  int device_index() const { return device_; }
  // As the driver reports it, e.g. "NVIDIA H100 80GB HBM3".
  const std::string& device_name() const { return device_name_; }
  // The stream every op is issued to.
  cudaStream_t stream() const { return stream_.get(); }
  cuda::CachingAllocator::Stats memory_stats() const { return allocator_.stats(); }

  Buffer allocate(size_t bytes) override;
  void deallocate(void* data) override;
  void copy_from_host(Tensor dst, const void* src) override;
  void copy_to_host(void* dst, Tensor src) override;
  void copy(Tensor dst, Tensor src) override;
  void fill(Tensor t, float value) override;
  void synchronize() override;

  void matmul_forward(Tensor out, Tensor inp, Tensor weight, Tensor bias) override;
  void matmul_backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp, Tensor weight) override;
  void matmul_gelu_forward(Tensor out_gelu, Tensor pre_gelu, Tensor inp, Tensor weight, Tensor bias) override;
  void layernorm_forward(Tensor out, Tensor mean, Tensor rstd, Tensor inp, Tensor weight, Tensor bias,
                         float eps) override;
  void layernorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp, Tensor weight,
                          Tensor mean, Tensor rstd) override;
  void residual_layernorm_forward(Tensor residual_out, Tensor out, Tensor mean, Tensor rstd, Tensor a, Tensor b,
                                  Tensor weight, Tensor bias, float eps) override;
  void rmsnorm_forward(Tensor out, Tensor rstd, Tensor inp, Tensor weight, float eps) override;
  void rmsnorm_backward(Tensor d_inp, Tensor d_weight, Tensor d_out, Tensor inp, Tensor weight, Tensor rstd) override;
  void residual_rmsnorm_forward(Tensor residual_out, Tensor out, Tensor rstd, Tensor a, Tensor b, Tensor weight,
                                float eps) override;
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
  void sum_of_squares_many(const Tensor* tensors, int count, double* sums) override;
  void scale(Tensor t, float factor) override;

  // Which attention ran the last attention_forward or attention_backward: "cudnn" (bf16 through cuDNN's fused
  // flash attention) or "tessera" (the kernels of attention.cu). Note [Attention choice] in cuda_backend.cc.
  const char* attention_engine() const { return last_attention_engine_; }
  // The matrix products' cuBLASLt runner: which epilogues it fused and refused (Gemm::epilogues_taken).
  const cuda::Gemm& gemm() const { return *gemm_; }

 private:
  // True when cuDNN takes this bf16 attention: built with cuDNN, not disabled by TESSERA_CUDNN_ATTENTION=0, the
  // shape supported and every pointer 16-byte aligned. Says once per shape on stderr why it does not.
  bool use_cudnn_attention(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs,
                           std::initializer_list<const void*> pointers);
  // After cuDNN attention threw at run time: says so once on stderr and sends every later attention to Tessera's
  // kernels (the caller then redoes the op with them).
  void stop_cudnn_attention(const std::exception& error);

  // Members are destroyed in reverse order: the allocator outlives everything that holds its memory.
  int device_;
  std::string device_name_;
  cuda::CachingAllocator allocator_;
  cuda::Stream stream_;
  std::unique_ptr<cuda::Gemm> gemm_;
  cuda::Context context_;
  // Pinned host memory the sums of squares are copied into: host_staging_capacity_ doubles, grown on demand.
  double* host_staging_ = nullptr;
  int host_staging_capacity_ = 0;
#if defined(TESSERA_HAS_CUDNN)
  std::unique_ptr<cuda::CudnnAttention> cudnn_attention_;  // created on first bf16 attention
#endif
  bool cudnn_attention_disabled_ = false;  // TESSERA_CUDNN_ATTENTION=0
  const char* last_attention_engine_ = "none";
};

}  // namespace tessera

// CudnnAttention: causal grouped-query (and multi-head) self-attention, forward and backward, in bf16 through cuDNN's
// fused flash attention. The [T, T] scores never reach memory: the forward saves each query row's log-sum-exp (lse) and
// the backward recomputes the probabilities from it. Same contract as the flash-style attention of core/backend.h.
//
// Built only when CMake found cuDNN 9 (TESSERA_HAS_CUDNN=1); without it this header declares nothing. The graphs
// and how they read the packed qkv buffer in place are described at the top of cudnn_attention.cc.
//
// Thread-safety: one CudnnAttention is used from one thread at a time (it caches plans per shape).
#pragma once

#if defined(TESSERA_HAS_CUDNN)

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>

#include "kernels/cuda/caching_allocator.h"

struct cudnnContext;  // cudnnHandle_t is a cudnnContext*; cuDNN's headers stay inside cudnn_attention.cc

namespace tessera::cuda {

// "cuDNN 9.19.0 (built against 9.19.0)": the library this process loaded and the headers it was compiled with.
// Needs no GPU. A first self-check when bringing cuDNN attention up on a new machine.
std::string describe_cudnn();

// The JSON by which cuDNN takes a GPU's properties (CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION) for a GPU
// described, not queried: compute capability `sm` (80 for 8.0, 90 for 9.0), `multiprocessors` SMs, and
// `shared_memory_per_block_optin` bytes of shared memory a block can opt into; `name` as the driver reports it
// (no quotes or backslashes: ConfigError). The other properties are fixed: the limits that sm80 and sm90
// data-center GPUs share, with the memory size, L2 size and clocks of an H100 SXM. Needs no GPU.
std::string described_gpu_json(int sm, int multiprocessors, int64_t shared_memory_per_block_optin,
                               const std::string& name);
// Described, not queried: an H100 SXM5 80GB (sm90, 132 SMs, 227 KiB opt-in shared memory) and an A100 SXM4
// 80GB (sm80, 108 SMs, 163 KiB).
std::string h100_sxm_json();
std::string a100_sxm_json();

// Whether cuDNN would run CudnnAttention's graphs for shape B, T, H, KV, hs on the GPU `device_json` describes (see
// described_gpu_json): builds the same forward and backward graphs as CudnnAttention::supported(), through the
// same code, and asks cuDNN's engine heuristics about that GPU instead of the current one. Returns "" when both
// graphs get at least one engine configuration, else the reason, in the words supported() would use. Builds no
// execution plan, so it compiles no kernel: a GPU accepted here can still fail at plan or run time.
//
// Needs no GPU and no handle, but cuDNN 9.8 or newer and a loadable libcuda.so.1 (the driver, or the CUDA
// toolkit's stub where there is no GPU): without one cuDNN drops every configuration of these engines and this
// returns its "none applies" refusal. Note [Checking the graphs without a GPU] in cudnn_attention.cc. Host work
// only, tens of milliseconds; each call builds and destroys descriptors of its own. Throws CudaError only when
// cuDNN itself fails (allocation), never for a refused shape or description.
std::string check_attention_graphs_for_device(const std::string& device_json, int64_t B, int64_t T, int64_t H,
                                              int64_t KV, int64_t hs);

class CudnnAttention {
 public:
  // Creates the cuDNN handle on the calling thread's current device, which every later call must also have
  // current. `allocator` (memory of that device) provides the workspaces and must outlive this object.
  explicit CudnnAttention(CachingAllocator& allocator);
  ~CudnnAttention();
  CudnnAttention(const CudnnAttention&) = delete;
  CudnnAttention& operator=(const CudnnAttention&) = delete;

  // Whether cuDNN's fused attention runs this shape in bf16: B batch rows, T tokens, H query heads and KV
  // key/value heads (KV divides H; KV == H is multi-head attention) of hs channels.
  // The first call for a shape builds and caches its forward and backward plans (runtime-compiled engines can
  // take seconds); later calls only look the answer up. Returns false, with the reason kept for reason(), when
  // cuDNN is older than 9.0, the GPU older than compute capability 8.0, hs is not a multiple of 8 or exceeds
  // 128, or cuDNN has no engine for one of the two graphs. Never throws for an unsupported shape. Synchronous
  // host work; issues nothing to the GPU.
  bool supported(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs);
  // Why the last supported() call returned false; empty after one that returned true.
  const std::string& reason() const { return reason_; }

  // qkv[B,T,(H + 2*KV)*hs] bf16 contiguous: each token's row is [Q heads (H*hs) | K heads (KV*hs) | V heads
  // (KV*hs)]; query head h uses key/value head h / (H/KV).
  // out[B,T,H,hs] bf16 and lse[B,H,T] f32 are overwritten; lse[b,h,t] = natural log of the sum over keys
  // s <= t of exp(q_t . k_s / sqrt(hs)), the log-sum-exp of the row's scaled, causally masked scores.
  // All pointers 16-byte aligned. Issues the work to `stream` and returns without waiting for it; device
  // scratch is freed on return, which is safe under Note [Stream-ordered reuse] (caching_allocator.h) as long
  // as the allocator's memory is used on `stream` only. Throws CudaError when supported() would say false.
  void forward(void* out, float* lse, const void* qkv, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs,
               cudaStream_t stream);
  // d_qkv (the layout of qkv) bf16 is overwritten with [dQ | dK | dV] (dK, dV summed over each group's query heads),
  // from d_out[B,T,H,hs] bf16 and the forward's qkv, out and lse (unchanged since); d_qkv overlaps none of them. Same
  // alignment, stream and error rules as forward(). Not promised to be bitwise deterministic: this is the graph
  // cudnn-frontend builds when determinism is not requested (dQ summed over key blocks in an f32 accumulator).
  void backward(void* d_qkv, const void* d_out, const void* qkv, const void* out, const float* lse, int64_t B,
                int64_t T, int64_t H, int64_t KV, int64_t hs, cudaStream_t stream);

 private:
  struct Plans;  // the finalized forward and backward plans of one shape (cudnn_attention.cc)
  using Shape = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>;  // B, T, H, KV, hs

  // The cached plans of a shape, built on first use; an entry records unsupported shapes too.
  Plans& plans_for(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs);
  // The plans of a supported shape for forward()/backward(); throws CudaError with the reason otherwise.
  Plans& runnable_plans(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs);

  CachingAllocator& allocator_;
  cudnnContext* handle_ = nullptr;
  int device_ = 0;
  int compute_capability_major_ = 0;
  int compute_capability_minor_ = 0;
  std::map<Shape, std::unique_ptr<Plans>> plans_;
  std::string reason_;
};

}  // namespace tessera::cuda

#endif  // TESSERA_HAS_CUDNN

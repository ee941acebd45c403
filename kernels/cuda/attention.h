// Causal multi-head attention on CUDA, fp32, materializing the [T, T] probabilities. Twin of
// kernels/cpu/attention.h.
//
// This is the straightforward formulation (matrix products through cuBLASLt, causal softmax kernels) that the
// fp32 backend needs to match the CPU reference. A fused flash-attention implementation (cuDNN's SDPA graph,
// bf16) is meant to replace this pair for bf16 training: it would provide the same two launchers and keep
// the log-sum-exp per row instead of `probs`, so only CudaBackend's dispatch changes.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"

namespace tessera::cuda {

// qkv[B,T,3*H*hs] rows are [Q | K | V], head h owning columns [h*hs, (h+1)*hs) of each third.
// out[B,T,H*hs] overwrites; probs[B,H,T,T] saves the causal softmax (zeros above the diagonal).
void attention_forward(float* out, float* probs, const float* qkv, int64_t B, int64_t T, int64_t H, int64_t hs,
                       const Context& ctx);
// d_qkv[B,T,3*H*hs] overwrites; d_probs[B,H,T,T] is scratch.
void attention_backward(float* d_qkv, float* d_probs, const float* d_out, const float* qkv, const float* probs,
                        int64_t B, int64_t T, int64_t H, int64_t hs, const Context& ctx);

}  // namespace tessera::cuda

// Causal grouped-query attention on CUDA, flash-style: no [T, T] matrix in global memory. Twin of
// kernels/cpu/attention.h. T (the storage type) is float or bf16; lse is f32.
//
// This is the fallback implementation, written to be obviously right rather than fast (f32 arithmetic in
// shared memory, no tensor cores). CudaBackend tries cuDNN's fused SDPA first for bf16 where it is available.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype.h"

namespace tessera::cuda {

// The largest head size the kernels take (their per-thread accumulators are sized for it).
constexpr int64_t kMaxAttentionHeadSize = 128;

// qkv[B,T,(H + 2*KV)*hs] rows are [Q heads (H*hs) | K heads (KV*hs) | V heads (KV*hs)], head h owning columns
// [h*hs, (h+1)*hs) of its part; query head h uses key/value head h / (H / KV) (KV divides H). Scores are scaled by
// 1/sqrt(hs) and causally masked. out[B,T,H*hs] overwrites; lse[B,H,T] overwrites with each query row's
// log-sum-exp of its scores. Requires hs <= kMaxAttentionHeadSize, B and H at most 65535.
template <typename S>
void attention_forward(S* out, float* lse, const S* qkv, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs,
                       const Context& ctx);
// d_qkv (the layout of qkv) overwrites, from d_out[B,T,H*hs] and the forward's qkv, out and lse; the probabilities
// are recomputed from lse, and dK, dV of a key/value head are summed over its query heads in a fixed order (no
// atomics). Uses B*H*T floats of scratch from ctx.allocator. Same limits as the forward.
template <typename S>
void attention_backward(S* d_qkv, const S* d_out, const S* qkv, const S* out, const float* lse, int64_t B, int64_t T,
                        int64_t H, int64_t KV, int64_t hs, const Context& ctx);

}  // namespace tessera::cuda

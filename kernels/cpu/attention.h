// Causal grouped-query attention on CPU, flash-style: the forward saves each query row's log-sum-exp and the
// backward recomputes the probabilities from it, so no [T,T] matrix outlives a call. One (batch, head) pair per
// OpenMP iteration, matmuls through sgemm, [T,T] scratch per thread.
#pragma once

#include <cstdint>

namespace tessera::cpu {

// qkv[B,T,(H + 2*KV)*hs] rows are [Q heads (H*hs) | K heads (KV*hs) | V heads (KV*hs)], head h owning columns
// [h*hs, (h+1)*hs) of its part; query head h uses key/value head h / (H / KV) (KV divides H).
// out[B,T,H*hs] overwrites; lse[B,H,T] = log(sum_j<=i exp(s q_i.k_j)) with s = 1/sqrt(hs).
void attention_forward(float* out, float* lse, const float* qkv, int64_t B, int64_t T, int64_t H, int64_t KV,
                       int64_t hs);
// d_qkv (the layout of qkv) overwrites, from d_out[B,T,H*hs] and the forward's qkv, out and lse; dK and dV of a
// key/value head sum over the query heads of its group, in increasing head order.
void attention_backward(float* d_qkv, const float* d_out, const float* qkv, const float* out, const float* lse,
                        int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs);

}  // namespace tessera::cpu

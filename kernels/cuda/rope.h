// Rotary position embedding (RoPE, rotate-half convention) on CUDA, in place on the Q and K heads of a packed qkv
// tensor. Twin of kernels/cpu/rope.h; layout and angles: core/backend.h, rope_forward. T is float or bf16.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype.h"

namespace tessera::cuda {

// qkv[N, (H + 2*KV)*hs]: rotates the H query and KV key heads of row i by the angles of position i % seq_len.
// hs must be even.
template <typename T>
void rope_forward(T* qkv, int64_t N, int64_t H, int64_t KV, int64_t hs, int64_t seq_len, float theta,
                  const Context& ctx);
// rope_forward at positions position + i % seq_len (new tokens after `position` cached ones).
template <typename T>
void rope_forward_at(T* qkv, int64_t N, int64_t H, int64_t KV, int64_t hs, int64_t seq_len, int64_t position,
                     float theta, const Context& ctx);
// The inverse (transposed) rotation of the same heads, for the gradient d_qkv.
template <typename T>
void rope_backward(T* d_qkv, int64_t N, int64_t H, int64_t KV, int64_t hs, int64_t seq_len, float theta,
                   const Context& ctx);

}  // namespace tessera::cuda

// Rotary position embedding (RoPE, rotate-half convention) on CPU, in place on the Q and K heads of a packed
// qkv tensor. Layout and angles: core/backend.h, rope_forward.
#pragma once

#include <cstdint>

namespace tessera::cpu {

// The frequency of pair d < hs/2, theta^(-2d/hs), in double (the angle pos * frequency is taken in double too).
double rope_inverse_frequency(int64_t d, int64_t hs, float theta);

// qkv[N, (H + 2*KV)*hs]: rotates the H query and KV key heads of row i by the angles of position i % seq_len.
void rope_forward(float* qkv, int64_t N, int64_t H, int64_t KV, int64_t hs, int64_t seq_len, float theta);
// rope_forward at positions position + i % seq_len (new tokens after `position` cached ones).
void rope_forward_at(float* qkv, int64_t N, int64_t H, int64_t KV, int64_t hs, int64_t seq_len, int64_t position,
                     float theta);
// The inverse (transposed) rotation of the same heads, for the gradient d_qkv.
void rope_backward(float* d_qkv, int64_t N, int64_t H, int64_t KV, int64_t hs, int64_t seq_len, float theta);

}  // namespace tessera::cpu

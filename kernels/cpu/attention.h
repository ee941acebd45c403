// Causal multi-head attention on CPU, one (batch, head) pair per OpenMP task, matmuls through sgemm.
#pragma once

#include <cstdint>

namespace tessera::cpu {

// qkv[B,T,3*H*hs] rows are [Q | K | V], head h owning columns [h*hs, (h+1)*hs) of each third.
// out[B,T,H*hs] overwrites; probs[B,H,T,T] saves the causal softmax (zeros above the diagonal).
void attention_forward(float* out, float* probs, const float* qkv, int64_t B, int64_t T, int64_t H, int64_t hs);
// d_qkv[B,T,3*H*hs] overwrites; d_probs[B,H,T,T] is scratch.
void attention_backward(float* d_qkv, float* d_probs, const float* d_out, const float* qkv, const float* probs,
                        int64_t B, int64_t T, int64_t H, int64_t hs);

}  // namespace tessera::cpu

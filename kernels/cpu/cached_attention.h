// Attention of new tokens over a key/value cache on CPU (inference): the contract is core/backend.h,
// cached_attention_forward. Plain loops: one (batch, head, query) per OpenMP iteration.
#pragma once

#include <cstdint>

namespace tessera::cpu {

// qkv[B,Tq,(H + 2*KV)*hs]; k_cache, v_cache [B,T_cache,KV,hs]; out[B,Tq,H*hs]. Writes the new tokens' K and V into
// cache rows [position, position + Tq), then query t of each sequence attends over rows [0, position + t].
void cached_attention_forward(float* out, const float* qkv, float* k_cache, float* v_cache, int64_t B, int64_t Tq,
                              int64_t T_cache, int64_t H, int64_t KV, int64_t hs, int64_t position);

}  // namespace tessera::cpu

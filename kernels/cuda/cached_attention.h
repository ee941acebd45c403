// Attention of new tokens over a key/value cache on CUDA (inference). Twin of kernels/cpu/cached_attention.h;
// the contract is core/backend.h, cached_attention_forward. S (the storage type) is float or bf16.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype.h"

namespace tessera::cuda {

// The most cached positions one query attends over (its scores sit in shared memory).
constexpr int64_t kMaxCachedPositions = 12288;

// qkv[B,Tq,(H + 2*KV)*hs]; k_cache, v_cache [B,T_cache,KV,hs]; out[B,Tq,H*hs]. Writes the new tokens' K and V into
// cache rows [position, position + Tq), then query t attends over rows [0, position + t]. Requires
// position + Tq <= min(T_cache, kMaxCachedPositions), H and B at most 65535.
template <typename S>
void cached_attention_forward(S* out, const S* qkv, S* k_cache, S* v_cache, int64_t B, int64_t Tq, int64_t T_cache,
                              int64_t H, int64_t KV, int64_t hs, int64_t position, const Context& ctx);

}  // namespace tessera::cuda

// Token + position embedding on CUDA, vocab-parallel aware. Twin of kernels/cpu/embedding.h.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"

namespace tessera::cuda {

// out[N,C] = wte[tokens[i] - vocab_start] if that row is in this shard (V_local rows), else 0;
//            + wpe[i % seq_len] if wpe is not null. Overwrites.
void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int64_t N, int64_t C,
                       int64_t V_local, int64_t seq_len, int64_t vocab_start, const Context& ctx);
// d_wte and d_wpe (if not null) accumulate. Deterministic and free of atomics: each gradient row is owned by
// one thread block, which adds the rows of d_out that map to it in increasing token order (the CPU twin's
// order, so the two agree bit for bit when their prefill agrees).
void embedding_backward(float* d_wte, float* d_wpe, const float* d_out, const int32_t* tokens, int64_t N, int64_t C,
                        int64_t V_local, int64_t seq_len, int64_t vocab_start, const Context& ctx);

}  // namespace tessera::cuda

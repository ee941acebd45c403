// Token + position embedding on CPU, vocab-parallel aware.
#pragma once

#include <cstdint>

namespace tessera::cpu {

// out[N,C] = wte[tokens[i] - vocab_start] if that row is in this shard (V_local rows), else 0;
//            + wpe[i % seq_len] if wpe is not null. Overwrites.
void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int64_t N,
                       int64_t C, int64_t V_local, int64_t seq_len, int64_t vocab_start);
// d_wte and d_wpe (if not null) accumulate.
void embedding_backward(float* d_wte, float* d_wpe, const float* d_out, const int32_t* tokens, int64_t N,
                        int64_t C, int64_t V_local, int64_t seq_len, int64_t vocab_start);

}  // namespace tessera::cpu

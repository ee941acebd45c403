// Token + position embedding on CUDA, vocab-parallel aware. Twin of kernels/cpu/embedding.h. T, the compute
// dtype of Note [Precision] (core/backend.h), is float or bf16; the gradients d_wte and d_wpe are f32.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype.h"

namespace tessera::cuda {

// out[N,C] = wte[tokens[i] - vocab_start] if that row is in this shard (V_local rows), else 0;
//            + wpe[i % seq_len] if wpe is not null; summed in f32 and rounded once. Overwrites.
template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* wte, const T* wpe, int64_t N, int64_t C, int64_t V_local,
                       int64_t seq_len, int64_t vocab_start, const Context& ctx);
// d_wte and d_wpe (if not null) accumulate, in f32. Deterministic, atomic-free and O(N log N + N C): the
// positions are sorted by token (a stable radix sort on the device), then each token of the shard is owned
// by one thread block, which adds its rows of d_out in increasing position order (the CPU twin's order, so
// for f32 the two agree bit for bit). Tokens outside [vocab_start, vocab_start + V_local) are skipped. Uses
// scratch memory from ctx.allocator. N must be below 2^31.
template <typename T>
void embedding_backward(float* d_wte, float* d_wpe, const T* d_out, const int32_t* tokens, int64_t N, int64_t C,
                        int64_t V_local, int64_t seq_len, int64_t vocab_start, const Context& ctx);

}  // namespace tessera::cuda

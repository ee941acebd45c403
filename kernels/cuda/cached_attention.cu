// Cached attention: a grid-stride copy of the new K and V heads into the caches, then one block per (query,
// head, sequence) that computes the query's scores over its cached keys into shared memory, their softmax (block
// max and sum), and the weighted sum of the values, one output channel per thread. f32 arithmetic; written to be
// obviously right (decoding reads each cached key once per query head, which bounds its speed anyway).
#include "kernels/cuda/cached_attention.h"
#include "kernels/cuda/cached_attention_kernels.cuh"
#include "kernels/cuda/cuda_check.h"

namespace tessera::cuda {

template <typename S>
void cached_attention_forward(S* out, const S* qkv, S* k_cache, S* v_cache, int64_t B, int64_t Tq, int64_t T_cache,
                              int64_t H, int64_t KV, int64_t hs, int64_t position, const Context& ctx) {
  if (B == 0 || Tq == 0) return;
  const int64_t copies = B * Tq * KV * hs;
  cache_write_kernel<<<grid_size(copies, 256), 256, 0, ctx.stream>>>(k_cache, v_cache, qkv, B, Tq, T_cache, H, KV, hs,
                                                                     position);
  CUDA_CHECK_LAUNCH();
  const dim3 grid(static_cast<unsigned>(Tq), static_cast<unsigned>(H), static_cast<unsigned>(B));
  const size_t shared = cached_attention_shared_bytes(position, Tq);
  const float scale = 1.0f / sqrtf(static_cast<float>(hs));
  cached_attention_kernel<<<grid, kThreads, shared, ctx.stream>>>(out, qkv, k_cache, v_cache, Tq, T_cache, H, KV, hs,
                                                                  position, scale);
  CUDA_CHECK_LAUNCH();
}

#define TS_INSTANTIATE(S)                                                                                      \
  template void cached_attention_forward<S>(S*, const S*, S*, S*, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                            int64_t, int64_t, const Context&);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
#undef TS_INSTANTIATE

}  // namespace tessera::cuda

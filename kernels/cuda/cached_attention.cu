// Cached attention: a grid-stride copy of the new K and V heads into the caches, then one block per (query,
// head, sequence) that computes the query's scores over its cached keys into shared memory, their softmax (block
// max and sum), and the weighted sum of the values, one output channel per thread. f32 arithmetic; written to be
// obviously right (decoding reads each cached key once per query head, which bounds its speed anyway).
#include "kernels/cuda/cached_attention.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/storage.cuh"

namespace tessera::cuda {

namespace {

constexpr int kThreads = 128;

template <typename S>
__global__ void cache_write_kernel(S* k_cache, S* v_cache, const S* qkv, int64_t B, int64_t Tq, int64_t T_cache,
                                   int64_t H, int64_t KV, int64_t hs, int64_t position) {
  const int64_t kv_width = KV * hs, width = (H + 2 * KV) * hs;
  for (int64_t e = grid_start(); e < B * Tq * kv_width; e += grid_stride()) {
    const int64_t c = e % kv_width, t = (e / kv_width) % Tq, b = e / (kv_width * Tq);
    const S* row = qkv + (b * Tq + t) * width + H * hs;
    const int64_t cached = (b * T_cache + position + t) * kv_width + c;
    k_cache[cached] = row[c];
    v_cache[cached] = row[kv_width + c];
  }
}

template <typename S>
__global__ void cached_attention_kernel(S* out, const S* qkv, const S* k_cache, const S* v_cache, int64_t Tq,
                                        int64_t T_cache, int64_t H, int64_t KV, int64_t hs, int64_t position,
                                        float scale) {
  extern __shared__ float scores[];
  const int64_t t = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t kv_width = KV * hs, width = (H + 2 * KV) * hs, g = h / (H / KV);
  const int64_t n = position + t + 1;
  const S* q = qkv + (b * Tq + t) * width + h * hs;
  const S* k = k_cache + b * T_cache * kv_width + g * hs;
  const S* v = v_cache + b * T_cache * kv_width + g * hs;
  float local_max = -INFINITY;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    float dot = 0;
    for (int64_t d = 0; d < hs; ++d) dot += to_float(q[d]) * to_float(k[j * kv_width + d]);
    scores[j] = dot * scale;
    local_max = fmaxf(local_max, scores[j]);
  }
  const float max = block_max(local_max);
  float local_sum = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    scores[j] = expf(scores[j] - max);
    local_sum += scores[j];
  }
  const float sum = block_sum(local_sum);  // its barriers also make every score visible
  S* o = out + (b * Tq + t) * H * hs + h * hs;
  for (int64_t d = threadIdx.x; d < hs; d += blockDim.x) {
    float acc = 0;
    for (int64_t j = 0; j < n; ++j) acc += scores[j] * to_float(v[j * kv_width + d]);
    o[d] = from_float<S>(acc / sum);
  }
}

}  // namespace

template <typename S>
void cached_attention_forward(S* out, const S* qkv, S* k_cache, S* v_cache, int64_t B, int64_t Tq, int64_t T_cache,
                              int64_t H, int64_t KV, int64_t hs, int64_t position, const Context& ctx) {
  if (B == 0 || Tq == 0) return;
  const int64_t copies = B * Tq * KV * hs;
  cache_write_kernel<<<grid_size(copies, 256), 256, 0, ctx.stream>>>(k_cache, v_cache, qkv, B, Tq, T_cache, H, KV, hs,
                                                                     position);
  CUDA_CHECK_LAUNCH();
  const dim3 grid(static_cast<unsigned>(Tq), static_cast<unsigned>(H), static_cast<unsigned>(B));
  const size_t shared = static_cast<size_t>(position + Tq) * sizeof(float);
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

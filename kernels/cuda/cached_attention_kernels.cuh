// Cached attention kernels (the cache write and the decode attention); see cached_attention.cu.
// Private to kernels/cuda: included by cached_attention.cu, which launches them, and by the SIMT emulation test
// (tests/simt), which runs them on the host. Names stay in an unnamed namespace, one copy per including file.
#pragma once

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
  TS_DYNAMIC_SHARED(float, scores);
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

// The attention kernel's dynamic shared memory: the scores of the longest query, position + Tq of them.
inline size_t cached_attention_shared_bytes(int64_t position, int64_t Tq) {
  return static_cast<size_t>(position + Tq) * sizeof(float);
}

}  // namespace

}  // namespace tessera::cuda

// Cached attention: for query t of sequence b and head h (key/value head g = h / (H/KV)), with n = position + t + 1
// cached keys K[j] = k_cache[b, j, g] and s = 1/sqrt(hs):
//   S_j = s q.K[j],  P_j = exp(S_j - max S) / sum_j exp(S_j - max S),  out = sum_j P_j V[j]
// in f32, as attention_forward computes one row of its [T,T] product.
#include "kernels/cpu/cached_attention.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace tessera::cpu {

void cached_attention_forward(float* out, const float* qkv, float* k_cache, float* v_cache, int64_t B, int64_t Tq,
                              int64_t T_cache, int64_t H, int64_t KV, int64_t hs, int64_t position) {
  const int64_t width = (H + 2 * KV) * hs, kv_width = KV * hs, group = H / KV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < Tq; ++t) {
      const float* row = qkv + (b * Tq + t) * width;
      const int64_t cached = (b * T_cache + position + t) * kv_width;
      std::memcpy(k_cache + cached, row + H * hs, static_cast<size_t>(kv_width) * sizeof(float));
      std::memcpy(v_cache + cached, row + H * hs + kv_width, static_cast<size_t>(kv_width) * sizeof(float));
    }
  }
#pragma omp parallel
  {
    thread_local std::vector<float> scores;
#pragma omp for collapse(3) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t t = 0; t < Tq; ++t) {
          const int64_t n = position + t + 1;
          if (static_cast<int64_t>(scores.size()) < n) scores.resize(static_cast<size_t>(n));
          const float* q = qkv + (b * Tq + t) * width + h * hs;
          const float* k = k_cache + b * T_cache * kv_width + (h / group) * hs;
          const float* v = v_cache + b * T_cache * kv_width + (h / group) * hs;
          float max = -INFINITY;
          for (int64_t j = 0; j < n; ++j) {
            float dot = 0;
            for (int64_t d = 0; d < hs; ++d) dot += q[d] * k[j * kv_width + d];
            scores[j] = dot * scale;
            max = scores[j] > max ? scores[j] : max;
          }
          float sum = 0;
          for (int64_t j = 0; j < n; ++j) {
            scores[j] = std::exp(scores[j] - max);
            sum += scores[j];
          }
          float* o = out + (b * Tq + t) * H * hs + h * hs;
          for (int64_t d = 0; d < hs; ++d) o[d] = 0;
          for (int64_t j = 0; j < n; ++j) {
            const float p = scores[j] / sum;
            for (int64_t d = 0; d < hs; ++d) o[d] += p * v[j * kv_width + d];
          }
        }
      }
    }
  }
}

}  // namespace tessera::cpu

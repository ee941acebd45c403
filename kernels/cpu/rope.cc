// RoPE forward/backward. Each row's cosines and sines are computed once (hs/2 of them) and applied to its
// H + KV rotated heads. The angle pos * theta^(-2d/hs) and its cosine and sine are computed in double and the
// cosine and sine rounded once to f32, as the reference fixtures compute them (make_fixture.py builds the angle
// table in float64): exact to f32 at any position, where an f32 angle loses digits at long sequences. The
// rotation itself is two f32 products and a sum, as PyTorch's q * cos + rotate_half(q) * sin.
#include "kernels/cpu/rope.h"

#include <cmath>
#include <vector>

namespace tessera::cpu {

double rope_inverse_frequency(int64_t d, int64_t hs, float theta) {
  return 1.0 / std::pow(static_cast<double>(theta), static_cast<double>(2 * d) / static_cast<double>(hs));
}

namespace {

// direction +1 rotates by +angle (forward), -1 by -angle (backward: the transpose of the rotation).
void rotate(float* qkv, int64_t N, int64_t H, int64_t KV, int64_t hs, int64_t seq_len, int64_t first_position,
            float theta, float direction) {
  const int64_t half = hs / 2;
  const int64_t row_width = (H + 2 * KV) * hs;
  std::vector<double> inverse_frequency(static_cast<size_t>(half));
  for (int64_t d = 0; d < half; ++d) inverse_frequency[d] = rope_inverse_frequency(d, hs, theta);
#pragma omp parallel
  {
    thread_local std::vector<float> cosines, sines;
    cosines.resize(static_cast<size_t>(half));
    sines.resize(static_cast<size_t>(half));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < N; ++i) {
      const double position = static_cast<double>(first_position + i % seq_len);
      for (int64_t d = 0; d < half; ++d) {
        const double angle = position * inverse_frequency[d];
        cosines[d] = static_cast<float>(std::cos(angle));
        sines[d] = direction * static_cast<float>(std::sin(angle));
      }
      float* row = qkv + i * row_width;
      for (int64_t head = 0; head < H + KV; ++head) {
        float* x = row + head * hs;
        float* y = x + half;
        for (int64_t d = 0; d < half; ++d) {
          const float a = x[d], b = y[d];
          x[d] = a * cosines[d] - b * sines[d];
          y[d] = b * cosines[d] + a * sines[d];
        }
      }
    }
  }
}

}  // namespace

void rope_forward(float* qkv, int64_t N, int64_t H, int64_t KV, int64_t hs, int64_t seq_len, float theta) {
  rotate(qkv, N, H, KV, hs, seq_len, 0, theta, 1.0f);
}

void rope_forward_at(float* qkv, int64_t N, int64_t H, int64_t KV, int64_t hs, int64_t seq_len, int64_t position,
                     float theta) {
  rotate(qkv, N, H, KV, hs, seq_len, position, theta, 1.0f);
}

void rope_backward(float* d_qkv, int64_t N, int64_t H, int64_t KV, int64_t hs, int64_t seq_len, float theta) {
  rotate(d_qkv, N, H, KV, hs, seq_len, 0, theta, -1.0f);
}

}  // namespace tessera::cpu

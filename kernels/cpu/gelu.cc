// GELU forward/backward.
#include "kernels/cpu/gelu.h"

#include "kernels/cpu/fast_math.h"

namespace tessera::cpu {

namespace {
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;
}  // namespace

void gelu_forward(float* out, const float* inp, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float x = inp[i];
    out[i] = 0.5f * x * (1.0f + tanh_approx(kSqrt2OverPi * (x + kCubic * x * x * x)));
  }
}

void gelu_backward(float* d_inp, const float* inp, const float* d_out, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float x = inp[i];
    float u = kSqrt2OverPi * (x + kCubic * x * x * x);
    float t = tanh_approx(u);
    float sech2 = 1.0f - t * t;
    float grad = 0.5f * (1.0f + t) + 0.5f * x * sech2 * kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
    d_inp[i] = grad * d_out[i];
  }
}

}  // namespace tessera::cpu

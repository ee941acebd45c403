// SwiGLU forward/backward. With s = sigmoid(g) = 1 / (1 + exp(-g)): silu(g) = g s and
// silu'(g) = s + g s (1 - s) = s (1 + g (1 - s)). exp goes through exp_approx (fast_math.h) so the row loops
// vectorize; it is within 2 ulp of exp, and its clamping keeps s in [0, 1] for every finite g.
#include "kernels/cpu/swiglu.h"

#include "kernels/cpu/fast_math.h"

namespace tessera::cpu {

void swiglu_forward(float* out, const float* gate_up, int64_t N, int64_t F) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < N; ++i) {
    const float* g = gate_up + i * 2 * F;
    const float* u = g + F;
    float* y = out + i * F;
#pragma omp simd
    for (int64_t j = 0; j < F; ++j) {
      const float s = 1.0f / (1.0f + exp_approx(-g[j]));
      y[j] = g[j] * s * u[j];
    }
  }
}

void swiglu_backward(float* d_gate_up, const float* d_out, const float* gate_up, int64_t N, int64_t F) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < N; ++i) {
    const float* g = gate_up + i * 2 * F;
    const float* u = g + F;
    const float* dy = d_out + i * F;
    float* dg = d_gate_up + i * 2 * F;
    float* du = dg + F;
#pragma omp simd
    for (int64_t j = 0; j < F; ++j) {
      const float s = 1.0f / (1.0f + exp_approx(-g[j]));
      dg[j] = dy[j] * u[j] * (s * (1.0f + g[j] * (1.0f - s)));
      du[j] = dy[j] * (g[j] * s);
    }
  }
}

}  // namespace tessera::cpu

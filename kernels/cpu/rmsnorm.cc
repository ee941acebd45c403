// RMSNorm forward/backward. With r = 1/sqrt(mean(x^2) + eps) and y_j = x_j r w_j per row:
//   dr/dx_k = -r^3 x_k / C,   so   dx_k = r (w_k dy_k - x_k r^2 mean_j(dy_j w_j x_j)),
//   dw_j = sum over rows of dy_j x_j r.
// Row sums are accumulated in double (as in layernorm.cc); the parameter gradient is summed per thread and the
// partial sums are reduced in a fixed order, so results do not depend on scheduling.
#include "kernels/cpu/rmsnorm.h"

#include <omp.h>

#include <cmath>
#include <vector>

namespace tessera::cpu {

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, float eps, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < N; ++i) {
    const float* x = inp + i * C;
    double sum_squares = 0;
    for (int64_t j = 0; j < C; ++j) sum_squares += static_cast<double>(x[j]) * x[j];
    const float s = static_cast<float>(1.0 / std::sqrt(sum_squares / static_cast<double>(C) + eps));
    float* y = out + i * C;
    for (int64_t j = 0; j < C; ++j) y[j] = x[j] * s * weight[j];
    rstd[i] = s;
  }
}

void rmsnorm_backward(float* d_inp, float* d_weight, const float* d_out, const float* inp, const float* weight,
                      const float* rstd, int64_t N, int64_t C) {
  const int threads = omp_get_max_threads();
  // Per-thread partial sums of d_weight, grown once and reused (see layernorm_backward).
  static thread_local std::vector<float> partial;
  partial.assign(static_cast<size_t>(threads) * C, 0.0f);
  float* sums = partial.data();
#pragma omp parallel num_threads(threads)
  {
    float* dw = sums + static_cast<size_t>(omp_get_thread_num()) * C;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < N; ++i) {
      const float* x = inp + i * C;
      const float* dy = d_out + i * C;
      float* dx = d_inp + i * C;
      const float s = rstd[i];
      double dot = 0;
      for (int64_t j = 0; j < C; ++j) dot += static_cast<double>(dy[j]) * weight[j] * x[j];
      const float correction = static_cast<float>(dot / static_cast<double>(C)) * s * s;
      for (int64_t j = 0; j < C; ++j) {
        dw[j] += dy[j] * x[j] * s;
        dx[j] += s * (weight[j] * dy[j] - x[j] * correction);
      }
    }
  }
  for (int t = 0; t < threads; ++t) {
    const float* dw = sums + static_cast<size_t>(t) * C;
    for (int64_t j = 0; j < C; ++j) d_weight[j] += dw[j];
  }
}

}  // namespace tessera::cpu

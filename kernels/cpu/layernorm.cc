// LayerNorm forward/backward. Row statistics are accumulated in double: a row of 768 floats costs nothing
// extra and keeps the result within rounding of PyTorch's.
#include "kernels/cpu/layernorm.h"

#include <omp.h>

#include <cmath>
#include <vector>

namespace tessera::cpu {

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, float eps, int64_t N, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < N; ++i) {
    const float* x = inp + i * C;
    double sum = 0;
    for (int64_t j = 0; j < C; ++j) sum += x[j];
    float m = static_cast<float>(sum / C);
    double var = 0;
    for (int64_t j = 0; j < C; ++j) {
      double d = x[j] - m;
      var += d * d;
    }
    float s = static_cast<float>(1.0 / std::sqrt(var / C + eps));
    float* y = out + i * C;
    for (int64_t j = 0; j < C; ++j) y[j] = (x[j] - m) * s * weight[j] + bias[j];
    mean[i] = m;
    rstd[i] = s;
  }
}

void layernorm_backward(float* d_inp, float* d_weight, float* d_bias, const float* d_out, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C) {
  int threads = omp_get_max_threads();
  // Per-thread partial sums of the parameter gradients, reduced in a fixed order (deterministic). The
  // scratch grows to its largest size once and is reused, so the training step allocates nothing.
  // (thread_local: the calling thread's copy; worker threads use it through `sums`, not by name.)
  static thread_local std::vector<float> partial;
  partial.assign(static_cast<size_t>(threads) * 2 * C, 0.0f);
  float* sums = partial.data();
#pragma omp parallel num_threads(threads)
  {
    float* dw = sums + static_cast<size_t>(omp_get_thread_num()) * 2 * C;
    float* db = dw + C;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < N; ++i) {
      const float* x = inp + i * C;
      const float* dy = d_out + i * C;
      float* dx = d_inp + i * C;
      float m = mean[i], s = rstd[i];
      float dnorm_mean = 0, dnorm_norm_mean = 0;
      for (int64_t j = 0; j < C; ++j) {
        float norm = (x[j] - m) * s;
        float dnorm = weight[j] * dy[j];
        dnorm_mean += dnorm;
        dnorm_norm_mean += dnorm * norm;
      }
      dnorm_mean /= C;
      dnorm_norm_mean /= C;
      for (int64_t j = 0; j < C; ++j) {
        float norm = (x[j] - m) * s;
        float dnorm = weight[j] * dy[j];
        db[j] += dy[j];
        dw[j] += norm * dy[j];
        dx[j] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
      }
    }
  }
  for (int t = 0; t < threads; ++t) {
    const float* dw = sums + static_cast<size_t>(t) * 2 * C;
    for (int64_t j = 0; j < C; ++j) {
      d_weight[j] += dw[j];
      d_bias[j] += dw[C + j];
    }
  }
}

}  // namespace tessera::cpu

// AdamW, written operation for operation as PyTorch's single-tensor AdamW so the fp32 results agree to
// rounding: decay first, then the moments, then the bias-corrected step.
#include "kernels/cpu/adamw.h"

#include <cmath>

#include "core/bf16.h"

namespace tessera::cpu {

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int64_t step, float grad_scale, uint16_t* param_copy) {
  const float decay = static_cast<float>(1.0 - static_cast<double>(lr) * weight_decay);
  const double bias_correction1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  const float step_size = static_cast<float>(lr / bias_correction1);
  const float bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float g = grad[i] * grad_scale;
    float w = param[i] * decay;
    float mi = m[i] * beta1 + g * (1.0f - beta1);
    float vi = v[i] * beta2 + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float denom = std::sqrt(vi) / bias_correction2_sqrt + eps;
    param[i] = w - step_size * (mi / denom);
  }
  if (param_copy != nullptr) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) param_copy[i] = f32_to_bf16(param[i]);
  }
}

double sum_of_squares(const float* x, int64_t n) {
  double sum = 0;
#pragma omp parallel for reduction(+ : sum) schedule(static)
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  return sum;
}

}  // namespace tessera::cpu

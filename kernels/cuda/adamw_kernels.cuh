// AdamW and sum-of-squares kernels, and the host-side AdamW factors; see adamw.cu.
// Private to kernels/cuda: included by adamw.cu, which launches them, and by the SIMT emulation test
// (tests/simt), which runs them on the host. Names stay in an unnamed namespace, one copy per including file.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/storage.cuh"

namespace tessera::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxPartials = 1024;

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n, float decay, float beta1,
                             float beta2, float eps, float step_size, float bias_correction2_sqrt, float grad_scale,
                             bf16* param_copy) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    const float g = grad[i] * grad_scale;
    const float w = param[i] * decay;
    const float mi = m[i] * beta1 + g * (1.0f - beta1);
    const float vi = v[i] * beta2 + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / bias_correction2_sqrt + eps;
    const float updated = w - step_size * (mi / denom);
    param[i] = updated;
    if (param_copy != nullptr) param_copy[i] = __float2bfloat16_rn(updated);
  }
}

// partial[block] = sum of x^2 over the block's grid-stride share, in double.
template <typename T>
__global__ void sum_of_squares_partial_kernel(double* partial, const T* x, int64_t n) {
  double sum = 0.0;
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    const double value = to_float(x[i]);
    sum += value * value;
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

// Block i: results[i] = sum of the kMaxPartials doubles of row i of partials.
__global__ void sum_partials_kernel(double* results, const double* partials) {
  const double* row = partials + static_cast<int64_t>(blockIdx.x) * kMaxPartials;
  double sum = 0.0;
  for (int i = threadIdx.x; i < kMaxPartials; i += blockDim.x) sum += row[i];
  sum = block_sum(sum);
  if (threadIdx.x == 0) results[blockIdx.x] = sum;
}

// The scalar factors of one AdamW step, computed on the host in double and rounded once, as the CPU twin does.
struct AdamWFactors {
  float decay;                  // 1 - lr * weight_decay
  float step_size;              // lr / (1 - beta1^step)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^step)
};
inline AdamWFactors adamw_factors(float lr, float beta1, float beta2, float weight_decay, int64_t step) {
  const double bias_correction1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  return {static_cast<float>(1.0 - static_cast<double>(lr) * weight_decay), static_cast<float>(lr / bias_correction1),
          static_cast<float>(std::sqrt(bias_correction2))};
}

}  // namespace

}  // namespace tessera::cuda

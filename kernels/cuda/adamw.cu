// AdamW and the sum of squares. The scalar factors of AdamW are computed on the host exactly as the CPU twin
// computes them, so both apply the same float constants.
#include <cmath>

#include "kernels/cuda/adamw.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/reduce.cuh"

namespace tessera::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxPartials = 1024;

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n, float decay, float beta1,
                             float beta2, float eps, float step_size, float bias_correction2_sqrt, float grad_scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = grad[i] * grad_scale;
    const float w = param[i] * decay;
    const float mi = m[i] * beta1 + g * (1.0f - beta1);
    const float vi = v[i] * beta2 + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / bias_correction2_sqrt + eps;
    param[i] = w - step_size * (mi / denom);
  }
}

// partial[block] = sum of x^2 over the block's grid-stride share, in double.
__global__ void sum_of_squares_partial_kernel(double* partial, const float* x, int64_t n) {
  double sum = 0.0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double value = x[i];
    sum += value * value;
  }
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[blockIdx.x] = sum;
}

__global__ void sum_partials_kernel(double* result, const double* partial, int count) {
  double sum = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) sum += partial[i];
  sum = block_sum(sum);
  if (threadIdx.x == 0) *result = sum;
}

}  // namespace

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int64_t step, float grad_scale, const Context& ctx) {
  if (n == 0) return;
  const float decay = static_cast<float>(1.0 - static_cast<double>(lr) * weight_decay);
  const double bias_correction1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  const float step_size = static_cast<float>(lr / bias_correction1);
  const float bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  adamw_kernel<<<grid_size(n, kThreads), kThreads, 0, ctx.stream>>>(param, grad, m, v, n, decay, beta1, beta2, eps,
                                                                    step_size, bias_correction2_sqrt, grad_scale);
  CUDA_CHECK_LAUNCH();
}

double sum_of_squares(const float* x, int64_t n, double* host_result, const Context& ctx) {
  if (n == 0) return 0.0;
  const int blocks = static_cast<int>(grid_size(n, kThreads, kMaxPartials));
  Scratch partial(ctx, static_cast<size_t>(blocks + 1) * sizeof(double));
  double* result = partial.f64() + blocks;
  sum_of_squares_partial_kernel<<<blocks, kThreads, 0, ctx.stream>>>(partial.f64(), x, n);
  CUDA_CHECK_LAUNCH();
  sum_partials_kernel<<<1, kThreads, 0, ctx.stream>>>(result, partial.f64(), blocks);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaMemcpyAsync(host_result, result, sizeof(double), cudaMemcpyDeviceToHost, ctx.stream));
  CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  return *host_result;
}

}  // namespace tessera::cuda

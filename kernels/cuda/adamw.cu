// AdamW and the sums of squares. The scalar factors of AdamW are computed on the host exactly as the CPU twin
// computes them, so both apply the same float constants.
//
// Sums of squares: tensor i is reduced by one launch of sum_of_squares_partial_kernel into its own row of
// kMaxPartials doubles (a grid-stride share per block, then a fixed tree in the block; rows are zeroed first,
// so unused slots hold 0), and one launch of sum_partials_kernel, a block per tensor, adds each row into
// results[i]. Adding the zero slots changes no bit of a sum, so a tensor's result does not depend on the
// others. One copy brings all results to the host, one wait.
#include <cmath>

#include "kernels/cuda/adamw.h"
#include "kernels/cuda/cuda_check.h"
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

}  // namespace

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int64_t step, float grad_scale, bf16* param_copy, const Context& ctx) {
  if (n == 0) return;
  const float decay = static_cast<float>(1.0 - static_cast<double>(lr) * weight_decay);
  const double bias_correction1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  const float step_size = static_cast<float>(lr / bias_correction1);
  const float bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  adamw_kernel<<<grid_size(n, kThreads), kThreads, 0, ctx.stream>>>(
      param, grad, m, v, n, decay, beta1, beta2, eps, step_size, bias_correction2_sqrt, grad_scale, param_copy);
  CUDA_CHECK_LAUNCH();
}

double sum_of_squares(const Tensor& x, double* host_result, const Context& ctx) {
  double sum = 0.0;
  sum_of_squares_many(&x, 1, &sum, host_result, ctx);
  return sum;
}

void sum_of_squares_many(const Tensor* tensors, int count, double* sums, double* host_staging, const Context& ctx) {
  if (count <= 0) return;
  for (int i = 0; i < count; ++i) {
    TS_ASSERT(tensors[i].dtype() == DType::kF32 || tensors[i].dtype() == DType::kBF16, "sum_of_squares of a ",
              dtype_name(tensors[i].dtype()), " tensor");
  }
  // count results, then count rows of kMaxPartials partial sums.
  const size_t partial_count = static_cast<size_t>(count) * kMaxPartials;
  Scratch scratch(ctx, (static_cast<size_t>(count) + partial_count) * sizeof(double));
  double* results = scratch.f64();
  double* partials = results + count;
  CUDA_CHECK(cudaMemsetAsync(partials, 0, partial_count * sizeof(double), ctx.stream));
  for (int i = 0; i < count; ++i) {
    const int64_t n = tensors[i].numel();
    if (n == 0) continue;
    const unsigned blocks = grid_size(n, kThreads, kMaxPartials);
    double* row = partials + static_cast<size_t>(i) * kMaxPartials;
    if (tensors[i].dtype() == DType::kF32) {
      sum_of_squares_partial_kernel<<<blocks, kThreads, 0, ctx.stream>>>(row, data_as<float>(tensors[i]), n);
    } else {
      sum_of_squares_partial_kernel<<<blocks, kThreads, 0, ctx.stream>>>(row, data_as<bf16>(tensors[i]), n);
    }
    CUDA_CHECK_LAUNCH();
  }
  sum_partials_kernel<<<static_cast<unsigned>(count), kThreads, 0, ctx.stream>>>(results, partials);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaMemcpyAsync(host_staging, results, static_cast<size_t>(count) * sizeof(double), cudaMemcpyDeviceToHost,
                             ctx.stream));
  CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  for (int i = 0; i < count; ++i) sums[i] = host_staging[i];
}

}  // namespace tessera::cuda

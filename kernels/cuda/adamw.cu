// AdamW and the sums of squares. The scalar factors of AdamW are computed on the host exactly as the CPU twin
// computes them, so both apply the same float constants.
//
// Sums of squares: tensor i is reduced by one launch of sum_of_squares_partial_kernel into its own row of
// kMaxPartials doubles (a grid-stride share per block, then a fixed tree in the block; rows are zeroed first,
// so unused slots hold 0), and one launch of sum_partials_kernel, a block per tensor, adds each row into
// results[i]. Adding the zero slots changes no bit of a sum, so a tensor's result does not depend on the
// others. One copy brings all results to the host, one wait.
#include "kernels/cuda/adamw.h"
#include "kernels/cuda/adamw_kernels.cuh"
#include "kernels/cuda/cuda_check.h"

namespace tessera::cuda {

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int64_t step, float grad_scale, bf16* param_copy, const Context& ctx) {
  if (n == 0) return;
  const AdamWFactors f = adamw_factors(lr, beta1, beta2, weight_decay, step);
  adamw_kernel<<<grid_size(n, kThreads), kThreads, 0, ctx.stream>>>(
      param, grad, m, v, n, f.decay, beta1, beta2, eps, f.step_size, f.bias_correction2_sqrt, grad_scale, param_copy);
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

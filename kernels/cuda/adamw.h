// AdamW update and the sums of squares for gradient norms, on CUDA. Twin of kernels/cpu/adamw.h.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype.h"

namespace tessera::cuda {

// PyTorch's AdamW (foreach=False) on n f32 elements, operation for operation as the CPU twin; see AdamWStep in
// core/backend.h. If param_copy is not null, it is overwritten in the same pass with the updated param rounded
// to bf16 (nearest even): the compute copy of mixed precision.
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int64_t step, float grad_scale, bf16* param_copy, const Context& ctx);
// Sum of squares in double. Synchronizes: reduces on the device (a fixed tree, so the result is reproducible),
// copies the one double to `host_result` (pinned host memory the caller owns) and waits for ctx.stream.
// x is f32 or bf16.
double sum_of_squares(const Tensor& x, double* host_result, const Context& ctx);
// sums[i] = sum_of_squares(tensors[i]) for i < count, the same values, with one device-to-host copy into
// host_staging (pinned, at least count doubles, owned by the caller) and one wait for ctx.stream.
void sum_of_squares_many(const Tensor* tensors, int count, double* sums, double* host_staging, const Context& ctx);

}  // namespace tessera::cuda

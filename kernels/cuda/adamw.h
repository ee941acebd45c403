// AdamW update and the sum of squares for gradient norms, on CUDA. Twin of kernels/cpu/adamw.h.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"

namespace tessera::cuda {

// PyTorch's AdamW (foreach=False) on n elements, operation for operation as the CPU twin; see AdamWStep in
// core/backend.h.
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int64_t step, float grad_scale, const Context& ctx);
// Sum of squares in double. Synchronizes: reduces on the device (a fixed tree, so the result is reproducible),
// copies the one double to `host_result` (pinned host memory the caller owns) and waits for ctx.stream.
double sum_of_squares(const float* x, int64_t n, double* host_result, const Context& ctx);

}  // namespace tessera::cuda

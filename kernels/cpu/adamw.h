// AdamW update and gradient-norm helpers on CPU.
#pragma once

#include <cstdint>

namespace tessera::cpu {

// PyTorch's AdamW (foreach=False) on n elements; see AdamWStep in core/backend.h. param_copy (optional): the
// updated param rounded to bf16.
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, float lr, float beta1, float beta2,
                  float eps, float weight_decay, int64_t step, float grad_scale, uint16_t* param_copy = nullptr);
// Sum of squares in double.
double sum_of_squares(const float* x, int64_t n);

}  // namespace tessera::cpu

// LayerNorm over the last dimension on CUDA. Twin of kernels/cpu/layernorm.h.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"

namespace tessera::cuda {

// out[N,C] = (inp - mean) * rstd * weight + bias; saves mean[N], rstd[N]. Overwrites.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       float eps, int64_t N, int64_t C, const Context& ctx);
// d_inp[N,C], d_weight[C], d_bias[C] accumulate. Deterministic: the parameter gradients are reduced over
// rows in a fixed order (no atomics). Uses scratch memory from ctx.allocator.
void layernorm_backward(float* d_inp, float* d_weight, float* d_bias, const float* d_out, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C,
                        const Context& ctx);

}  // namespace tessera::cuda

// LayerNorm over the last dimension on CUDA, and the residual add fused with it. Twin of kernels/cpu/layernorm.h.
// T, the compute dtype of Note [Precision] (core/backend.h), is float or bf16; mean, rstd and the parameter
// gradients are f32 whatever T is.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype.h"

namespace tessera::cuda {

// out[N,C] = (inp - mean) * rstd * weight + bias; saves mean[N], rstd[N]. Overwrites.
template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight, const T* bias, float eps,
                       int64_t N, int64_t C, const Context& ctx);
// residual_out = a + b (rounded to T), then layernorm_forward of residual_out (as stored) into out, mean, rstd:
// one kernel, one pass over a and b. residual_out may alias a or b. Overwrites.
template <typename T>
void residual_layernorm_forward(T* residual_out, T* out, float* mean, float* rstd, const T* a, const T* b,
                                const T* weight, const T* bias, float eps, int64_t N, int64_t C, const Context& ctx);
// d_inp[N,C] (T), d_weight[C] and d_bias[C] (f32) accumulate. Deterministic: the parameter gradients are
// reduced over rows in a fixed order (no atomics). Uses scratch memory from ctx.allocator.
template <typename T>
void layernorm_backward(T* d_inp, float* d_weight, float* d_bias, const T* d_out, const T* inp, const T* weight,
                        const float* mean, const float* rstd, int64_t N, int64_t C, const Context& ctx);

}  // namespace tessera::cuda

// RMSNorm over the last dimension on CUDA, and the residual add fused with it. Twin of kernels/cpu/rmsnorm.h.
// T, the compute dtype of Note [Precision] (core/backend.h), is float or bf16; rstd and d_weight are f32 whatever T
// is.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype.h"

namespace tessera::cuda {

// out[N,C] = inp * rstd * weight, rstd[N] = 1/sqrt(mean(inp^2) + eps). Overwrites.
template <typename T>
void rmsnorm_forward(T* out, float* rstd, const T* inp, const T* weight, float eps, int64_t N, int64_t C,
                     const Context& ctx);
// residual_out = a + b (rounded to T), then rmsnorm_forward of residual_out (as stored) into out and rstd: one
// kernel, one pass over a and b. residual_out may alias a or b; out aliases none of them. Overwrites.
template <typename T>
void residual_rmsnorm_forward(T* residual_out, T* out, float* rstd, const T* a, const T* b, const T* weight, float eps,
                              int64_t N, int64_t C, const Context& ctx);
// d_inp[N,C] (T) and d_weight[C] (f32) accumulate. Deterministic: d_weight is reduced over rows in a fixed order
// (no atomics). Uses scratch memory from ctx.allocator.
template <typename T>
void rmsnorm_backward(T* d_inp, float* d_weight, const T* d_out, const T* inp, const T* weight, const float* rstd,
                      int64_t N, int64_t C, const Context& ctx);

}  // namespace tessera::cuda

// Linear layer on CUDA through cuBLASLt (f32 compute). Weights are [OC, C]: out = inp W^T + b. Twin of
// kernels/cpu/matmul.h. T, the compute dtype of Note [Precision] (core/backend.h), is float or bf16; the
// parameter gradients d_weight and d_bias are f32 whatever T is.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype.h"

namespace tessera::cuda {

// out[N,OC] = inp[N,C] weight[OC,C]^T + bias[OC] (bias may be null). Overwrites out. The bias is fused into
// the product (cuBLASLt BIAS epilogue) when cuBLASLt takes it; else the product is added to the bias in f32
// and rounded once (bf16 goes through f32 scratch from ctx.allocator).
template <typename T>
void matmul_forward(T* out, const T* inp, const T* weight, const T* bias, int64_t N, int64_t C, int64_t OC,
                    const Context& ctx);
// pre_gelu = inp weight^T + bias and out_gelu = gelu(pre_gelu), both [N,OC], overwritten. One cuBLASLt call with
// the GELU_AUX_BIAS epilogue when cuBLASLt takes it (aligned bias and pre_gelu, OC divisible by 8); else
// matmul_forward then gelu_forward. bias may be null (then always the two-step path).
template <typename T>
void matmul_gelu_forward(T* out_gelu, T* pre_gelu, const T* inp, const T* weight, const T* bias, int64_t N, int64_t C,
                         int64_t OC, const Context& ctx);
// d_inp[N,C] = d_out weight (overwrites; skipped if null); d_weight[OC,C] += d_out^T inp (f32, accumulated by
// the product with beta = 1); d_bias[OC] += column sums of d_out (f32; skipped if null), fused into the
// d_weight product (BGRADB epilogue, into scratch, then added) when cuBLASLt takes it, else a deterministic
// column-sum kernel. Uses scratch memory from ctx.allocator.
template <typename T>
void matmul_backward(T* d_inp, float* d_weight, float* d_bias, const T* d_out, const T* inp, const T* weight, int64_t N,
                     int64_t C, int64_t OC, const Context& ctx);

}  // namespace tessera::cuda

// Linear layer on CUDA through cuBLASLt (fp32 compute). Weights are [OC, C]: out = inp W^T + b. Twin of
// kernels/cpu/matmul.h.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"

namespace tessera::cuda {

// out[N,OC] = inp[N,C] weight[OC,C]^T + bias[OC] (bias may be null). Overwrites out. The bias is fused into
// the product (cuBLASLt BIAS epilogue) when cuBLASLt takes it, else written first and the product added.
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N, int64_t C,
                    int64_t OC, const Context& ctx);
// d_inp[N,C] = d_out weight (overwrites; skipped if null); d_weight[OC,C] += d_out^T inp; d_bias[OC] += column
// sums of d_out (skipped if null), fused into the d_weight product (BGRADB epilogue) when cuBLASLt takes it,
// else a deterministic column-sum kernel. Uses scratch memory from ctx.allocator.
void matmul_backward(float* d_inp, float* d_weight, float* d_bias, const float* d_out, const float* inp,
                     const float* weight, int64_t N, int64_t C, int64_t OC, const Context& ctx);

}  // namespace tessera::cuda

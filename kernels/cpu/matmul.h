// Linear layer on CPU: OpenBLAS sgemm, bias folded in. Weights are [OC, C]: out = inp W^T + b.
#pragma once

#include <cstdint>

namespace tessera::cpu {

// out[N,OC] = inp[N,C] weight[OC,C]^T + bias[OC] (bias may be null). Overwrites out.
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N, int64_t C,
                    int64_t OC);
// d_inp[N,C] = d_out weight (overwrites; skipped if null); d_weight[OC,C] += d_out^T inp;
// d_bias[OC] += column sums of d_out (skipped if null).
void matmul_backward(float* d_inp, float* d_weight, float* d_bias, const float* d_out, const float* inp,
                     const float* weight, int64_t N, int64_t C, int64_t OC);

}  // namespace tessera::cpu

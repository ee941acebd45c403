// LayerNorm over the last dimension on CPU.
#pragma once

#include <cstdint>

namespace tessera::cpu {

// out[N,C] = (inp - mean) * rstd * weight + bias; saves mean[N], rstd[N]. Overwrites.
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, float eps, int64_t N, int64_t C);
// d_inp[N,C], d_weight[C], d_bias[C] accumulate.
void layernorm_backward(float* d_inp, float* d_weight, float* d_bias, const float* d_out, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C);

}  // namespace tessera::cpu

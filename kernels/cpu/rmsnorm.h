// RMSNorm over the last dimension on CPU.
#pragma once

#include <cstdint>

namespace tessera::cpu {

// out[N,C] = inp * rstd * weight, rstd[N] = 1/sqrt(mean(inp^2) + eps). Overwrites.
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, float eps, int64_t N, int64_t C);
// d_inp[N,C] and d_weight[C] accumulate.
void rmsnorm_backward(float* d_inp, float* d_weight, const float* d_out, const float* inp, const float* weight,
                      const float* rstd, int64_t N, int64_t C);

}  // namespace tessera::cpu

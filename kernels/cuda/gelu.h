// GELU, tanh approximation, on CUDA. Twin of kernels/cpu/gelu.h.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"

namespace tessera::cuda {

// out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). Overwrites.
void gelu_forward(float* out, const float* inp, int64_t n, const Context& ctx);
// d_inp = d_out * gelu'(inp). Overwrites; d_inp may alias d_out.
void gelu_backward(float* d_inp, const float* inp, const float* d_out, int64_t n, const Context& ctx);

}  // namespace tessera::cuda

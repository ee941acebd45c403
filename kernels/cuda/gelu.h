// GELU, tanh approximation, on CUDA. Twin of kernels/cpu/gelu.h. T is float or bf16 (dtype.h).
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype.h"

namespace tessera::cuda {

// out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). Overwrites; out may alias inp.
template <typename T>
void gelu_forward(T* out, const T* inp, int64_t n, const Context& ctx);
// d_inp = d_out * gelu'(inp). Overwrites; d_inp may alias d_out.
template <typename T>
void gelu_backward(T* d_inp, const T* inp, const T* d_out, int64_t n, const Context& ctx);

}  // namespace tessera::cuda

// SwiGLU on CUDA over a packed [gate | up] tensor. Twin of kernels/cpu/swiglu.h. T is float or bf16 (dtype.h).
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype.h"

namespace tessera::cuda {

// out[N,F] = silu(g) * u with g = gate_up[:, 0:F], u = gate_up[:, F:2F], silu(g) = g / (1 + exp(-g)). Overwrites.
template <typename T>
void swiglu_forward(T* out, const T* gate_up, int64_t N, int64_t F, const Context& ctx);
// d_gate_up[N,2F] = [d_out * u * silu'(g) | d_out * silu(g)]. Overwrites; aliases neither input.
template <typename T>
void swiglu_backward(T* d_gate_up, const T* d_out, const T* gate_up, int64_t N, int64_t F, const Context& ctx);

}  // namespace tessera::cuda

// SwiGLU on CPU: the gated MLP activation of Llama over a packed [gate | up] tensor.
#pragma once

#include <cstdint>

namespace tessera::cpu {

// out[N,F] = silu(g) * u with g = gate_up[:, 0:F], u = gate_up[:, F:2F], silu(g) = g / (1 + exp(-g)). Overwrites.
void swiglu_forward(float* out, const float* gate_up, int64_t N, int64_t F);
// d_gate_up[N,2F] = [d_out * u * silu'(g) | d_out * silu(g)]. Overwrites; aliases neither input.
void swiglu_backward(float* d_gate_up, const float* d_out, const float* gate_up, int64_t N, int64_t F);

}  // namespace tessera::cpu

// SwiGLU kernels; see swiglu.cu.
// Private to kernels/cuda: included by swiglu.cu, which launches them, and by the SIMT emulation test
// (tests/simt), which runs them on the host. Names stay in an unnamed namespace, one copy per including file.
#pragma once

#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/storage.cuh"

namespace tessera::cuda {

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

template <typename T>
__global__ void swiglu_forward_kernel(T* out, const T* gate_up, int64_t N, int64_t F) {
  for (int64_t e = grid_start(); e < N * F; e += grid_stride()) {
    const int64_t i = e / F, j = e % F;
    const float g = to_float(gate_up[i * 2 * F + j]);
    const float u = to_float(gate_up[i * 2 * F + F + j]);
    out[e] = from_float<T>(g * sigmoid(g) * u);
  }
}

template <typename T>
__global__ void swiglu_backward_kernel(T* d_gate_up, const T* d_out, const T* gate_up, int64_t N, int64_t F) {
  for (int64_t e = grid_start(); e < N * F; e += grid_stride()) {
    const int64_t i = e / F, j = e % F;
    const float g = to_float(gate_up[i * 2 * F + j]);
    const float u = to_float(gate_up[i * 2 * F + F + j]);
    const float dy = to_float(d_out[e]);
    const float s = sigmoid(g);
    d_gate_up[i * 2 * F + j] = from_float<T>(dy * u * (s * (1.0f + g * (1.0f - s))));
    d_gate_up[i * 2 * F + F + j] = from_float<T>(dy * (g * s));
  }
}

}  // namespace

}  // namespace tessera::cuda

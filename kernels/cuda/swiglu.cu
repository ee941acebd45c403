// SwiGLU forward/backward: the CPU twin's formulas in float, one output column of one row per thread of a
// grid-stride loop. With s = sigmoid(g): silu(g) = g s, silu'(g) = s (1 + g (1 - s)).
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/cuda/swiglu.h"

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

template <typename T>
void swiglu_forward(T* out, const T* gate_up, int64_t N, int64_t F, const Context& ctx) {
  if (N * F == 0) return;
  swiglu_forward_kernel<<<grid_size(N * F, kThreads), kThreads, 0, ctx.stream>>>(out, gate_up, N, F);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void swiglu_backward(T* d_gate_up, const T* d_out, const T* gate_up, int64_t N, int64_t F, const Context& ctx) {
  if (N * F == 0) return;
  swiglu_backward_kernel<<<grid_size(N * F, kThreads), kThreads, 0, ctx.stream>>>(d_gate_up, d_out, gate_up, N, F);
  CUDA_CHECK_LAUNCH();
}

template void swiglu_forward<float>(float*, const float*, int64_t, int64_t, const Context&);
template void swiglu_forward<bf16>(bf16*, const bf16*, int64_t, int64_t, const Context&);
template void swiglu_backward<float>(float*, const float*, const float*, int64_t, int64_t, const Context&);
template void swiglu_backward<bf16>(bf16*, const bf16*, const bf16*, int64_t, int64_t, const Context&);

}  // namespace tessera::cuda

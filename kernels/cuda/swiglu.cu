// SwiGLU forward/backward: the CPU twin's formulas in float, one output column of one row per thread of a
// grid-stride loop. With s = sigmoid(g): silu(g) = g s, silu'(g) = s (1 + g (1 - s)).
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/swiglu.h"
#include "kernels/cuda/swiglu_kernels.cuh"

namespace tessera::cuda {

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

// GELU forward/backward: the CPU twin's formulas in float, one element per thread of a grid-stride loop.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/gelu_kernels.cuh"

namespace tessera::cuda {

template <typename T>
void gelu_forward(T* out, const T* inp, int64_t n, const Context& ctx) {
  if (n == 0) return;
  gelu_forward_kernel<<<grid_size(n, kThreads), kThreads, 0, ctx.stream>>>(out, inp, n);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void gelu_backward(T* d_inp, const T* inp, const T* d_out, int64_t n, const Context& ctx) {
  if (n == 0) return;
  gelu_backward_kernel<<<grid_size(n, kThreads), kThreads, 0, ctx.stream>>>(d_inp, inp, d_out, n);
  CUDA_CHECK_LAUNCH();
}

template void gelu_forward<float>(float*, const float*, int64_t, const Context&);
template void gelu_forward<bf16>(bf16*, const bf16*, int64_t, const Context&);
template void gelu_backward<float>(float*, const float*, const float*, int64_t, const Context&);
template void gelu_backward<bf16>(bf16*, const bf16*, const bf16*, int64_t, const Context&);

}  // namespace tessera::cuda

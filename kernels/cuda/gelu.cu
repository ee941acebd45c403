// GELU forward/backward: the CPU twin's formulas, one element per thread of a grid-stride loop.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/reduce.cuh"

namespace tessera::cuda {

namespace {

constexpr int kThreads = 256;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

__global__ void gelu_forward_kernel(float* out, const float* inp, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = inp[i];
    out[i] = 0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + kCubic * x * x * x)));
  }
}

__global__ void gelu_backward_kernel(float* d_inp, const float* inp, const float* d_out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float x = inp[i];
    const float t = tanhf(kSqrt2OverPi * (x + kCubic * x * x * x));
    const float sech2 = 1.0f - t * t;
    const float grad = 0.5f * (1.0f + t) + 0.5f * x * sech2 * kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
    d_inp[i] = grad * d_out[i];
  }
}

}  // namespace

void gelu_forward(float* out, const float* inp, int64_t n, const Context& ctx) {
  if (n == 0) return;
  gelu_forward_kernel<<<grid_size(n, kThreads), kThreads, 0, ctx.stream>>>(out, inp, n);
  CUDA_CHECK_LAUNCH();
}

void gelu_backward(float* d_inp, const float* inp, const float* d_out, int64_t n, const Context& ctx) {
  if (n == 0) return;
  gelu_backward_kernel<<<grid_size(n, kThreads), kThreads, 0, ctx.stream>>>(d_inp, inp, d_out, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace tessera::cuda

// GELU kernels; see gelu.cu.
// Private to kernels/cuda: included by gelu.cu, which launches them, and by the SIMT emulation test
// (tests/simt), which runs them on the host. Names stay in an unnamed namespace, one copy per including file.
#pragma once

#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/storage.cuh"

namespace tessera::cuda {

namespace {

constexpr int kThreads = 256;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;

template <typename T>
__global__ void gelu_forward_kernel(T* out, const T* inp, int64_t n) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    const float x = to_float(inp[i]);
    out[i] = from_float<T>(0.5f * x * (1.0f + tanhf(kSqrt2OverPi * (x + kCubic * x * x * x))));
  }
}

// Not __restrict__: d_inp may alias d_out (read, then written, by the same thread).
template <typename T>
__global__ void gelu_backward_kernel(T* d_inp, const T* inp, const T* d_out, int64_t n) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    const float x = to_float(inp[i]);
    const float t = tanhf(kSqrt2OverPi * (x + kCubic * x * x * x));
    const float sech2 = 1.0f - t * t;
    const float grad = 0.5f * (1.0f + t) + 0.5f * x * sech2 * kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
    d_inp[i] = from_float<T>(grad * to_float(d_out[i]));
  }
}

}  // namespace

}  // namespace tessera::cuda

// Elementwise kernels: one grid-stride loop each.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/reduce.cuh"

namespace tessera::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void add_kernel(float* out, const float* a, const float* b, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = a[i] + b[i];
  }
}

__global__ void scale_kernel(float* t, float factor, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    t[i] *= factor;
  }
}

template <typename T>
__global__ void fill_kernel(T* t, T value, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    t[i] = value;
  }
}

}  // namespace

void add(float* out, const float* a, const float* b, int64_t n, const Context& ctx) {
  if (n == 0) return;
  add_kernel<<<grid_size(n, kThreads), kThreads, 0, ctx.stream>>>(out, a, b, n);
  CUDA_CHECK_LAUNCH();
}

void scale(float* t, float factor, int64_t n, const Context& ctx) {
  if (n == 0) return;
  scale_kernel<<<grid_size(n, kThreads), kThreads, 0, ctx.stream>>>(t, factor, n);
  CUDA_CHECK_LAUNCH();
}

void fill(float* t, float value, int64_t n, const Context& ctx) {
  if (n == 0) return;
  fill_kernel<<<grid_size(n, kThreads), kThreads, 0, ctx.stream>>>(t, value, n);
  CUDA_CHECK_LAUNCH();
}

void fill(int32_t* t, int32_t value, int64_t n, const Context& ctx) {
  if (n == 0) return;
  fill_kernel<<<grid_size(n, kThreads), kThreads, 0, ctx.stream>>>(t, value, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace tessera::cuda

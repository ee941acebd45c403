// Elementwise kernels (add, scale, fill, the f32 <-> bf16 conversion); see elementwise.cu.
// Private to kernels/cuda: included by elementwise.cu, which launches them, and by the SIMT emulation test
// (tests/simt), which runs them on the host. Names stay in an unnamed namespace, one copy per including file.
#pragma once

#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/storage.cuh"

namespace tessera::cuda {

namespace {

constexpr int kThreads = 256;

// Not __restrict__: out may alias a or b (each element is read before it is written, by the same thread).
template <typename T>
__global__ void add_kernel(T* out, const T* a, const T* b, int64_t n) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) out[i] = from_float<T>(to_float(a[i]) + to_float(b[i]));
}

template <typename T>
__global__ void scale_kernel(T* t, float factor, int64_t n) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) t[i] = from_float<T>(to_float(t[i]) * factor);
}

template <typename T>
__global__ void fill_kernel(T* t, T value, int64_t n) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) t[i] = value;
}

template <typename Dst, typename Src>
__global__ void convert_kernel(Dst* dst, const Src* src, int64_t n) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) dst[i] = from_float<Dst>(to_float(src[i]));
}

}  // namespace

}  // namespace tessera::cuda

// RoPE kernels; see rope.cu.
// Private to kernels/cuda: included by rope.cu, which launches them, and by the SIMT emulation test
// (tests/simt), which runs them on the host. Names stay in an unnamed namespace, one copy per including file.
#pragma once

#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/storage.cuh"

namespace tessera::cuda {

namespace {

constexpr int kThreads = 256;

// direction +1 rotates by +angle (forward), -1 by -angle (backward).
template <typename T>
__global__ void rope_kernel(T* qkv, int64_t N, int64_t H, int64_t KV, int64_t hs, int64_t seq_len,
                            int64_t first_position, float theta, float direction) {
  const int64_t half = hs / 2, row_width = (H + 2 * KV) * hs;
  for (int64_t e = grid_start(); e < N * half; e += grid_stride()) {
    const int64_t i = e / half, d = e % half;
    const double inverse_frequency =
        1.0 / pow(static_cast<double>(theta), static_cast<double>(2 * d) / static_cast<double>(hs));
    const double angle = static_cast<double>(first_position + i % seq_len) * inverse_frequency;
    double sine = 0, cosine = 0;
    sincos(angle, &sine, &cosine);
    const float c = static_cast<float>(cosine), s = direction * static_cast<float>(sine);
    T* row = qkv + i * row_width;
    for (int64_t head = 0; head < H + KV; ++head) {
      T* x = row + head * hs + d;
      T* y = x + half;
      const float a = to_float(*x), b = to_float(*y);
      *x = from_float<T>(__fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s)));
      *y = from_float<T>(__fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s)));
    }
  }
}

}  // namespace

}  // namespace tessera::cuda

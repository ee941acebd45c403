// RoPE forward/backward: one thread per (row, pair d < hs/2) of a grid-stride loop computes the pair's cosine and
// sine once and rotates it in every Q and K head of the row (consecutive threads touch consecutive columns).
// The angle is the CPU twin's (kernels/cpu/rope.cc): pos * theta^(-2d/hs) in double, its cos and sin in double,
// rounded once. The rotation uses explicitly rounded products and sums
// (no fused multiply-add), as the CPU and PyTorch compute it, so both backends agree to the last bit except where
// a double cos or sin rounds to float differently (their double results differ by an ulp or two at most).
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/rope.h"
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

template <typename T>
void rotate(T* qkv, int64_t N, int64_t H, int64_t KV, int64_t hs, int64_t seq_len, int64_t first_position, float theta,
            float direction, const Context& ctx) {
  const int64_t pairs = N * (hs / 2);
  if (pairs == 0) return;
  rope_kernel<<<grid_size(pairs, kThreads), kThreads, 0, ctx.stream>>>(qkv, N, H, KV, hs, seq_len, first_position,
                                                                       theta, direction);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

template <typename T>
void rope_forward(T* qkv, int64_t N, int64_t H, int64_t KV, int64_t hs, int64_t seq_len, float theta,
                  const Context& ctx) {
  rotate(qkv, N, H, KV, hs, seq_len, 0, theta, 1.0f, ctx);
}

template <typename T>
void rope_forward_at(T* qkv, int64_t N, int64_t H, int64_t KV, int64_t hs, int64_t seq_len, int64_t position,
                     float theta, const Context& ctx) {
  rotate(qkv, N, H, KV, hs, seq_len, position, theta, 1.0f, ctx);
}

template <typename T>
void rope_backward(T* d_qkv, int64_t N, int64_t H, int64_t KV, int64_t hs, int64_t seq_len, float theta,
                   const Context& ctx) {
  rotate(d_qkv, N, H, KV, hs, seq_len, 0, theta, -1.0f, ctx);
}

#define TS_INSTANTIATE(T)                                                                                 \
  template void rope_forward<T>(T*, int64_t, int64_t, int64_t, int64_t, int64_t, float, const Context&);  \
  template void rope_backward<T>(T*, int64_t, int64_t, int64_t, int64_t, int64_t, float, const Context&); \
  template void rope_forward_at<T>(T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, const Context&);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
#undef TS_INSTANTIATE

}  // namespace tessera::cuda

// RoPE forward/backward: one thread per (row, pair d < hs/2) of a grid-stride loop computes the pair's cosine and
// sine once and rotates it in every Q and K head of the row (consecutive threads touch consecutive columns).
// The angle is the CPU twin's (kernels/cpu/rope.cc): pos * theta^(-2d/hs) in double, its cos and sin in double,
// rounded once. The rotation uses explicitly rounded products and sums
// (no fused multiply-add), as the CPU and PyTorch compute it, so both backends agree to the last bit except where
// a double cos or sin rounds to float differently (their double results differ by an ulp or two at most).
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/rope_kernels.cuh"

namespace tessera::cuda {

namespace {

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

// Attention forward/backward, the CPU twin's math. For one (b, h), with Q, K, V the [T, hs] slices of qkv
// (row stride 3C) and s = 1/sqrt(hs):
//   S = s Q K^T,  P = causal_softmax_rows(S),  O = P V
//   dP = dO V^T,  dV = P^T dO,  dS = P * (dP - rowsum(dP * P)),  dQ = s dS K,  dK = s dS^T Q
// Each product runs as one cuBLASLt call per batch element b, batched over the H heads (head h of Q starts
// h*hs columns after head 0: a constant batch stride). Full squares are computed and the causal structure is
// applied by the softmax kernels, which write exact zeros above the diagonal.
#include <cmath>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/reduce.cuh"

namespace tessera::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kRowsPerBlock = kThreads / 32;

// One warp per row of probs [B*H*T, T]; row r is query position r % T. In place: scores in, probabilities out.
__global__ void causal_softmax_forward_kernel(float* probs, int64_t rows, int64_t T) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const int64_t i = r % T;
  float* row = probs + r * T;
  float m = -INFINITY;
  for (int64_t j = lane; j <= i; j += 32) m = fmaxf(m, row[j]);
  m = warp_max(m);
  float sum = 0.0f;
  for (int64_t j = lane; j <= i; j += 32) {
    const float e = expf(row[j] - m);
    row[j] = e;
    sum += e;
  }
  const float inv = 1.0f / warp_sum(sum);
  for (int64_t j = lane; j < T; j += 32) row[j] = j <= i ? row[j] * inv : 0.0f;
}

// dS = P * (dP - rowsum(dP * P)) in place in d_probs; zero above the diagonal.
__global__ void causal_softmax_backward_kernel(float* d_probs, const float* probs, int64_t rows, int64_t T) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= rows) return;
  const int64_t i = r % T;
  const float* p = probs + r * T;
  float* dp = d_probs + r * T;
  float dot = 0.0f;
  for (int64_t j = lane; j <= i; j += 32) dot += p[j] * dp[j];
  dot = warp_sum(dot);
  for (int64_t j = lane; j < T; j += 32) dp[j] = j <= i ? p[j] * (dp[j] - dot) : 0.0f;
}

// Operands of one batch element b, batched over heads: Q/K/V/dQ/dK/dV are [T, hs] with row stride 3C and head
// stride hs; O/dO are [T, hs] with row stride C; P/dP are [T, T] with head stride T*T.
struct HeadMatrix {
  const float* data;
  int64_t ld;
  int64_t head_stride;
};

// D = alpha op(A) op(B) for every head of one batch element.
void batched_product(const Context& ctx, int64_t H, int64_t m, int64_t n, int64_t k, HeadMatrix a, bool transpose_a,
                     HeadMatrix b, bool transpose_b, float* d, int64_t ldd, int64_t d_head_stride, float alpha) {
  GemmProblem p;
  p.m = m;
  p.n = n;
  p.k = k;
  p.batch = H;
  p.a = a.data;
  p.lda = a.ld;
  p.stride_a = a.head_stride;
  p.transpose_a = transpose_a;
  p.b = b.data;
  p.ldb = b.ld;
  p.stride_b = b.head_stride;
  p.transpose_b = transpose_b;
  p.d = d;
  p.ldd = ldd;
  p.stride_d = d_head_stride;
  p.alpha = alpha;
  ctx.gemm->run(p, ctx.stream);
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock); }

}  // namespace

void attention_forward(float* out, float* probs, const float* qkv, int64_t B, int64_t T, int64_t H, int64_t hs,
                       const Context& ctx) {
  if (B == 0 || T == 0 || H == 0) return;
  const int64_t C = H * hs, C3 = 3 * C, TT = T * T;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  for (int64_t b = 0; b < B; ++b) {
    const float* q = qkv + b * T * C3;
    const HeadMatrix Q{q, C3, hs}, K{q + C, C3, hs};
    batched_product(ctx, H, T, T, hs, Q, false, K, true, probs + b * H * TT, T, TT, scale);  // S = s Q K^T
  }
  causal_softmax_forward_kernel<<<row_blocks(B * H * T), kThreads, 0, ctx.stream>>>(probs, B * H * T, T);
  CUDA_CHECK_LAUNCH();
  for (int64_t b = 0; b < B; ++b) {
    const HeadMatrix P{probs + b * H * TT, T, TT}, V{qkv + b * T * C3 + 2 * C, C3, hs};
    batched_product(ctx, H, T, hs, T, P, false, V, false, out + b * T * C, C, hs, 1.0f);  // O = P V
  }
}

void attention_backward(float* d_qkv, float* d_probs, const float* d_out, const float* qkv, const float* probs,
                        int64_t B, int64_t T, int64_t H, int64_t hs, const Context& ctx) {
  if (B == 0 || T == 0 || H == 0) return;
  const int64_t C = H * hs, C3 = 3 * C, TT = T * T;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  for (int64_t b = 0; b < B; ++b) {
    const float* q = qkv + b * T * C3;
    float* dq = d_qkv + b * T * C3;
    const HeadMatrix V{q + 2 * C, C3, hs}, dO{d_out + b * T * C, C, hs}, P{probs + b * H * TT, T, TT};
    batched_product(ctx, H, T, T, hs, dO, false, V, true, d_probs + b * H * TT, T, TT, 1.0f);  // dP = dO V^T
    batched_product(ctx, H, T, hs, T, P, true, dO, false, dq + 2 * C, C3, hs, 1.0f);           // dV = P^T dO
  }
  causal_softmax_backward_kernel<<<row_blocks(B * H * T), kThreads, 0, ctx.stream>>>(d_probs, probs, B * H * T, T);
  CUDA_CHECK_LAUNCH();
  for (int64_t b = 0; b < B; ++b) {
    const float* q = qkv + b * T * C3;
    float* dq = d_qkv + b * T * C3;
    const HeadMatrix Q{q, C3, hs}, K{q + C, C3, hs}, dS{d_probs + b * H * TT, T, TT};
    batched_product(ctx, H, T, hs, T, dS, false, K, false, dq, C3, hs, scale);     // dQ = s dS K
    batched_product(ctx, H, T, hs, T, dS, true, Q, false, dq + C, C3, hs, scale);  // dK = s dS^T Q
  }
}

}  // namespace tessera::cuda

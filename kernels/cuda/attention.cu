// Grouped-query attention forward/backward without a [T, T] buffer, the CPU twin's math. For one (b, h), with Q
// the [T, hs] slice of query head h in qkv, K and V those of its key/value head g = h / (H/KV) (row stride
// C3 = (H + 2*KV)*hs) and s = 1/sqrt(hs), rows i (queries) and columns j (keys), j <= i:
//   S = s Q K^T,  P = softmax_rows(S),  O = P V,  lse_i = log sum_j exp(S_ij)
//   P_ij = exp(S_ij - lse_i),  dP = dO V^T,  D_i = rowsum(dO_i * O_i) (= rowsum(dP_i * P_i)),
//   dS = P * (dP - D),  dQ = s dS K,  dK = s dS^T Q,  dV = P^T dO
//
// Tiles of kTile = 32 queries and 32 keys; a block of 8 warps works on one (b, h, tile). Tiles are widened to
// f32 in shared memory. Every score is a dot product over the head dimension, computed by one lane, in the same
// order (d = 0, 1, ...) in all kernels, so backward recomputes exactly the forward's scores. The two roles of a
// warp's lanes:
//   - for dot products, lane = the other index of the tile (key for a query row, query for a key row): each
//     lane reads its own padded shared-memory row (stride hs + 1: no bank conflicts);
//   - for the accumulations (O, dQ, dK, dV rows), lane = column d, d + 32, ...: each value computed by lane l in
//     the first role is broadcast with __shfl_sync in a loop over l whose bounds are the same for the warp.
// Each warp owns kRowsPerWarp rows of the block's tile; their accumulators stay in registers.
//
// Forward (one block per query tile): online softmax over the key tiles up to the diagonal; running max m and
// sum l per row, O rescaled by exp(m_old - m_new). Backward: D first (one warp per row), then dK and dV (one
// block per key tile, looping over the query tiles from the diagonal on) and dQ (one block per query tile,
// looping over the key tiles up to the diagonal): two kernels and no atomics, each output written once. The
// key kernel's block owns a key tile of one key/value head and sums dK and dV over the query heads of its group
// in increasing order (one head when KV == H: the multi-head kernels unchanged).
#include <cmath>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_kernels.cuh"
#include "kernels/cuda/cuda_check.h"

namespace tessera::cuda {

static_assert(kMaxHeadSize == kMaxAttentionHeadSize,
              "attention_kernels.cuh sizes its accumulators for kMaxAttentionHeadSize");

namespace {

// Dynamic shared memory of a kernel, allowed past the default 48 KiB where needed (sm_80 and sm_90 have more).
template <typename Kernel>
void allow_shared_memory(Kernel kernel, size_t bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

void check_shape(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs) {
  TS_CHECK(hs >= 1 && hs <= kMaxAttentionHeadSize, ConfigError, "attention: head size ", hs,
           " is not supported by the CUDA fallback kernel (1 to ", kMaxAttentionHeadSize,
           "); choose n_embd / n_head within that range");
  TS_ASSERT(KV >= 1 && H % KV == 0, "attention: ", KV, " key/value heads do not divide ", H, " query heads");
  TS_CHECK(B <= 65535 && H <= 65535 && T < (int64_t{1} << 31), ConfigError, "attention: batch ", B, ", heads ", H,
           ", sequence ", T, " exceed the CUDA kernel's grid (65535 batch rows and heads at most)");
}

}  // namespace

template <typename S>
void attention_forward(S* out, float* lse, const S* qkv, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs,
                       const Context& ctx) {
  if (B == 0 || T == 0 || H == 0) return;
  check_shape(B, T, H, KV, hs);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const size_t shared = forward_shared_bytes(hs);
  allow_shared_memory(attention_forward_kernel<S>, shared);
  attention_forward_kernel<S>
      <<<tile_grid(B, T, H), kThreads, shared, ctx.stream>>>(out, lse, qkv, heads_of(T, H, KV, hs), scale);
  CUDA_CHECK_LAUNCH();
}

template <typename S>
void attention_backward(S* d_qkv, const S* d_out, const S* qkv, const S* out, const float* lse, int64_t B, int64_t T,
                        int64_t H, int64_t KV, int64_t hs, const Context& ctx) {
  if (B == 0 || T == 0 || H == 0) return;
  check_shape(B, T, H, KV, hs);
  const Heads shape = heads_of(T, H, KV, hs);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int T32 = static_cast<int>(T), H32 = static_cast<int>(H), hs32 = static_cast<int>(hs);
  Scratch delta(ctx, static_cast<size_t>(B * H * T) * sizeof(float));
  const int64_t rows = B * T * H;
  attention_backward_delta_kernel<<<delta_blocks(rows), kThreads, 0, ctx.stream>>>(delta.f32(), d_out, out, rows, T32,
                                                                                   H32, hs32);
  CUDA_CHECK_LAUNCH();

  const size_t key_shared = backward_key_shared_bytes(hs);
  allow_shared_memory(attention_backward_key_kernel<S>, key_shared);
  attention_backward_key_kernel<S>
      <<<tile_grid(B, T, KV), kThreads, key_shared, ctx.stream>>>(d_qkv, d_out, qkv, lse, delta.f32(), shape, scale);
  CUDA_CHECK_LAUNCH();
  const size_t query_shared = backward_query_shared_bytes(hs);
  allow_shared_memory(attention_backward_query_kernel<S>, query_shared);
  attention_backward_query_kernel<S>
      <<<tile_grid(B, T, H), kThreads, query_shared, ctx.stream>>>(d_qkv, d_out, qkv, lse, delta.f32(), shape, scale);
  CUDA_CHECK_LAUNCH();
}

template void attention_forward<float>(float*, float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                       const Context&);
template void attention_forward<bf16>(bf16*, float*, const bf16*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                      const Context&);
template void attention_backward<float>(float*, const float*, const float*, const float*, const float*, int64_t,
                                        int64_t, int64_t, int64_t, int64_t, const Context&);
template void attention_backward<bf16>(bf16*, const bf16*, const bf16*, const bf16*, const float*, int64_t, int64_t,
                                       int64_t, int64_t, int64_t, const Context&);

}  // namespace tessera::cuda

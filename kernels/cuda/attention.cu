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
#include <algorithm>
#include <cmath>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/storage.cuh"

namespace tessera::cuda {

namespace {

constexpr int kTile = 32;
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = kTile / kWarps;
constexpr int kChunks = static_cast<int>(kMaxAttentionHeadSize) / 32;  // columns d = lane + 32 c, c < kChunks

// The shape of one call: H query heads, KV key/value heads of hs channels, T tokens.
struct Heads {
  int T, H, KV, hs;
  __device__ __forceinline__ int64_t C() const { return static_cast<int64_t>(H) * hs; }            // row width of out
  __device__ __forceinline__ int64_t C3() const { return static_cast<int64_t>(H + 2 * KV) * hs; }  // of qkv
};

// Where the operands of query head h of batch row b start; rows of Q, K, V (and their gradients) are C3 apart,
// rows of O and dO C.
struct Head {
  int64_t q;    // offset of Q[0] of this head in qkv / d_qkv
  int64_t k;    // offset of K[0] of its key/value head; V[0] is KV*hs further
  int64_t o;    // offset of O[0] in out / d_out
  int64_t lse;  // offset of row 0 in lse / delta
};

__device__ __forceinline__ Head head_offsets(const Heads& s, int64_t b, int64_t h) {
  const int64_t g = h / (s.H / s.KV);
  return Head{b * s.T * s.C3() + h * s.hs, b * s.T * s.C3() + s.C() + g * s.hs, b * s.T * s.C() + h * s.hs,
              (b * s.H + h) * s.T};
}

// tile[r * stride + d] = rows first_row + r (r < kTile) of src (row stride ld), widened; zero past row T.
template <typename S>
__device__ void load_tile(float* tile, int stride, const S* src, int64_t ld, int first_row, int T, int hs) {
  for (int e = threadIdx.x; e < kTile * hs; e += blockDim.x) {
    const int r = e / hs, d = e % hs, t = first_row + r;
    tile[r * stride + d] = t < T ? to_float(src[static_cast<int64_t>(t) * ld + d]) : 0.0f;
  }
}

__device__ __forceinline__ float dot(const float* x, const float* y, int hs) {
  float sum = 0.0f;
  for (int d = 0; d < hs; ++d) sum += x[d] * y[d];
  return sum;
}

// Grid (query tiles, H, B). Shared: Q [kTile][hs], K [kTile][hs + 1], V [kTile][hs].
template <typename S>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(S* out, float* lse, const S* qkv, Heads shape, float scale) {
  extern __shared__ float shared[];
  const int T = shape.T, hs = shape.hs;
  float* q_tile = shared;
  float* k_tile = q_tile + kTile * hs;
  float* v_tile = k_tile + kTile * (hs + 1);
  const Head head = head_offsets(shape, blockIdx.z, blockIdx.y);
  const int64_t C = shape.C(), C3 = shape.C3();
  const S* q = qkv + head.q;
  const S* k = qkv + head.k;
  const S* v = k + static_cast<int64_t>(shape.KV) * hs;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int q0 = blockIdx.x * kTile;
  const int q_last = min(q0 + kTile, T) - 1;

  load_tile(q_tile, hs, q, C3, q0, T, hs);
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kChunks];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    m[rr] = -INFINITY;
    l[rr] = 0.0f;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) acc[rr][c] = 0.0f;
  }

  // Key tiles start at multiples of kTile up to the diagonal, so k0 <= q0 <= i for every query row i of the
  // block: key k0 is visible to every row, every row's max is finite from the first tile on.
  for (int k0 = 0; k0 <= q_last; k0 += kTile) {
    __syncthreads();  // nobody reads the previous K and V tiles any more (and the Q tile is complete)
    load_tile(k_tile, hs + 1, k, C3, k0, T, hs);
    load_tile(v_tile, hs, v, C3, k0, T, hs);
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int r = warp + rr * kWarps, i = q0 + r;
      if (i >= T) continue;  // the same for the whole warp
      const int j = k0 + lane;
      const float s = j <= i ? dot(q_tile + r * hs, k_tile + lane * (hs + 1), hs) * scale : -INFINITY;
      const float m_new = fmaxf(m[rr], warp_max(s));
      const float p = j <= i ? expf(s - m_new) : 0.0f;
      const float alpha = expf(m[rr] - m_new);  // 0 on the first tile, where m is -inf
      l[rr] = l[rr] * alpha + warp_sum(p);
      m[rr] = m_new;
#pragma unroll
      for (int c = 0; c < kChunks; ++c) acc[rr][c] *= alpha;
      const int keys = min(kTile, i - k0 + 1);  // keys of this tile visible to row i, at least 1
      for (int jj = 0; jj < keys; ++jj) {
        const float pj = __shfl_sync(kFullMask, p, jj);
#pragma unroll
        for (int c = 0; c < kChunks; ++c) {
          const int d = lane + 32 * c;
          if (d < hs) acc[rr][c] += pj * v_tile[jj * hs + d];
        }
      }
    }
  }

#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int i = q0 + warp + rr * kWarps;
    if (i >= T) continue;
    const float inv = 1.0f / l[rr];
    S* o = out + head.o + static_cast<int64_t>(i) * C;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      if (d < hs) o[d] = from_float<S>(acc[rr][c] * inv);
    }
    if (lane == 0) lse[head.lse + i] = m[rr] + logf(l[rr]);
  }
}

// delta[(b*H + h)*T + t] = sum_d d_out[b, t, h*hs + d] * out[b, t, h*hs + d]: one warp per (b, t, h).
template <typename S>
__global__ void attention_backward_delta_kernel(float* delta, const S* d_out, const S* out, int64_t rows, int T, int H,
                                                int hs) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kWarps) + threadIdx.x / 32;  // (b * T + t) * H + h
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const S* dy = d_out + row * hs;
  const S* y = out + row * hs;
  float sum = 0.0f;
  for (int d = lane; d < hs; d += 32) sum += to_float(dy[d]) * to_float(y[d]);
  sum = warp_sum(sum);
  const int64_t h = row % H, bt = row / H, t = bt % T, b = bt / T;
  if (lane == 0) delta[(b * H + h) * T + t] = sum;
}

// dK and dV of one key tile of key/value head blockIdx.y, summed over the query heads of its group. Grid (key
// tiles, KV, B). Shared: Q [kTile][hs + 1], dO [kTile][hs + 1], K [kTile][hs], V [kTile][hs], lse [kTile],
// delta [kTile].
template <typename S>
__global__ void __launch_bounds__(kThreads)
    attention_backward_key_kernel(S* d_qkv, const S* d_out, const S* qkv, const float* lse, const float* delta,
                                  Heads shape, float scale) {
  extern __shared__ float shared[];
  const int T = shape.T, hs = shape.hs;
  float* q_tile = shared;
  float* do_tile = q_tile + kTile * (hs + 1);
  float* k_tile = do_tile + kTile * (hs + 1);
  float* v_tile = k_tile + kTile * hs;
  float* lse_tile = v_tile + kTile * hs;
  float* delta_tile = lse_tile + kTile;
  const int group = shape.H / shape.KV;
  const int first_head = blockIdx.y * group;
  const Head kv_head = head_offsets(shape, blockIdx.z, first_head);
  const int64_t C = shape.C(), C3 = shape.C3();
  const S* k = qkv + kv_head.k;
  const S* v = k + static_cast<int64_t>(shape.KV) * hs;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int k0 = blockIdx.x * kTile;

  load_tile(k_tile, hs, k, C3, k0, T, hs);
  load_tile(v_tile, hs, v, C3, k0, T, hs);
  float dk[kRowsPerWarp][kChunks], dv[kRowsPerWarp][kChunks];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) dk[rr][c] = dv[rr][c] = 0.0f;
  }

  for (int h = first_head; h < first_head + group; ++h) {
    const Head head = head_offsets(shape, blockIdx.z, h);
    const S* q = qkv + head.q;
    // Queries i >= j >= k0: the query tiles from the one starting at k0 on.
    for (int q0 = k0; q0 < T; q0 += kTile) {
      __syncthreads();  // nobody reads the previous query tile any more (and the K, V tiles are complete)
      load_tile(q_tile, hs + 1, q, C3, q0, T, hs);
      load_tile(do_tile, hs + 1, d_out + head.o, C, q0, T, hs);
      if (threadIdx.x < kTile) {
        const int i = q0 + threadIdx.x;
        lse_tile[threadIdx.x] = i < T ? lse[head.lse + i] : 0.0f;
        delta_tile[threadIdx.x] = i < T ? delta[head.lse + i] : 0.0f;
      }
      __syncthreads();
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr) {
        const int r = warp + rr * kWarps, j = k0 + r;
        if (j >= T) continue;  // the same for the whole warp
        const int i = q0 + lane;
        float p = 0.0f, ds = 0.0f;
        if (i < T && i >= j) {
          const float s = dot(q_tile + lane * (hs + 1), k_tile + r * hs, hs) * scale;
          p = expf(s - lse_tile[lane]);
          const float dp = dot(do_tile + lane * (hs + 1), v_tile + r * hs, hs);
          ds = p * (dp - delta_tile[lane]);
        }
        // Queries of this tile that see key j and exist: [max(j - q0, 0), min(kTile, T - q0)).
        const int first = max(j - q0, 0), last = min(kTile, T - q0);
        for (int ii = first; ii < last; ++ii) {
          const float pi = __shfl_sync(kFullMask, p, ii);
          const float dsi = __shfl_sync(kFullMask, ds, ii);
#pragma unroll
          for (int c = 0; c < kChunks; ++c) {
            const int d = lane + 32 * c;
            if (d < hs) {
              dv[rr][c] += pi * do_tile[ii * (hs + 1) + d];
              dk[rr][c] += dsi * q_tile[ii * (hs + 1) + d];
            }
          }
        }
      }
    }
  }

#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int j = k0 + warp + rr * kWarps;
    if (j >= T) continue;
    S* dk_row = d_qkv + kv_head.k + static_cast<int64_t>(j) * C3;
    S* dv_row = dk_row + static_cast<int64_t>(shape.KV) * hs;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      if (d < hs) {
        dk_row[d] = from_float<S>(dk[rr][c] * scale);
        dv_row[d] = from_float<S>(dv[rr][c]);
      }
    }
  }
}

// dQ of one query tile. Grid (query tiles, H, B). Shared: Q [kTile][hs], dO [kTile][hs], K [kTile][hs + 1],
// V [kTile][hs + 1].
template <typename S>
__global__ void __launch_bounds__(kThreads)
    attention_backward_query_kernel(S* d_qkv, const S* d_out, const S* qkv, const float* lse, const float* delta,
                                    Heads shape, float scale) {
  extern __shared__ float shared[];
  const int T = shape.T, hs = shape.hs;
  float* q_tile = shared;
  float* do_tile = q_tile + kTile * hs;
  float* k_tile = do_tile + kTile * hs;
  float* v_tile = k_tile + kTile * (hs + 1);
  const Head head = head_offsets(shape, blockIdx.z, blockIdx.y);
  const int64_t C = shape.C(), C3 = shape.C3();
  const S* q = qkv + head.q;
  const S* k = qkv + head.k;
  const S* v = k + static_cast<int64_t>(shape.KV) * hs;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int q0 = blockIdx.x * kTile;
  const int q_last = min(q0 + kTile, T) - 1;

  load_tile(q_tile, hs, q, C3, q0, T, hs);
  load_tile(do_tile, hs, d_out + head.o, C, q0, T, hs);
  float row_lse[kRowsPerWarp], row_delta[kRowsPerWarp], dq[kRowsPerWarp][kChunks];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int i = q0 + warp + rr * kWarps;
    row_lse[rr] = i < T ? lse[head.lse + i] : 0.0f;
    row_delta[rr] = i < T ? delta[head.lse + i] : 0.0f;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) dq[rr][c] = 0.0f;
  }

  // As in the forward: k0 <= q0 <= i, so every row sees at least key k0 of every tile.
  for (int k0 = 0; k0 <= q_last; k0 += kTile) {
    __syncthreads();  // nobody reads the previous K and V tiles any more (and the Q, dO tiles are complete)
    load_tile(k_tile, hs + 1, k, C3, k0, T, hs);
    load_tile(v_tile, hs + 1, v, C3, k0, T, hs);
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int r = warp + rr * kWarps, i = q0 + r;
      if (i >= T) continue;  // the same for the whole warp
      const int j = k0 + lane;
      float ds = 0.0f;
      if (j <= i) {
        const float s = dot(q_tile + r * hs, k_tile + lane * (hs + 1), hs) * scale;
        const float p = expf(s - row_lse[rr]);
        const float dp = dot(do_tile + r * hs, v_tile + lane * (hs + 1), hs);
        ds = p * (dp - row_delta[rr]);
      }
      const int keys = min(kTile, i - k0 + 1);
      for (int jj = 0; jj < keys; ++jj) {
        const float dsj = __shfl_sync(kFullMask, ds, jj);
#pragma unroll
        for (int c = 0; c < kChunks; ++c) {
          const int d = lane + 32 * c;
          if (d < hs) dq[rr][c] += dsj * k_tile[jj * (hs + 1) + d];
        }
      }
    }
  }

#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int i = q0 + warp + rr * kWarps;
    if (i >= T) continue;
    S* dq_row = d_qkv + head.q + static_cast<int64_t>(i) * C3;
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      if (d < hs) dq_row[d] = from_float<S>(dq[rr][c] * scale);
    }
  }
}

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

// Grid (tiles of T, heads, B) for `heads` query heads (or key/value heads).
dim3 tile_grid(int64_t B, int64_t T, int64_t heads) {
  return dim3(static_cast<unsigned>((T + kTile - 1) / kTile), static_cast<unsigned>(heads), static_cast<unsigned>(B));
}

Heads heads_of(int64_t T, int64_t H, int64_t KV, int64_t hs) {
  return Heads{static_cast<int>(T), static_cast<int>(H), static_cast<int>(KV), static_cast<int>(hs)};
}

}  // namespace

template <typename S>
void attention_forward(S* out, float* lse, const S* qkv, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs,
                       const Context& ctx) {
  if (B == 0 || T == 0 || H == 0) return;
  check_shape(B, T, H, KV, hs);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const size_t shared = static_cast<size_t>(kTile * (3 * hs + 1)) * sizeof(float);
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
  attention_backward_delta_kernel<<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kThreads, 0, ctx.stream>>>(
      delta.f32(), d_out, out, rows, T32, H32, hs32);
  CUDA_CHECK_LAUNCH();

  // Both kernels: two tiles of kTile x (hs + 1) and two of kTile x hs (plus lse and delta for the key kernel).
  const size_t key_shared = static_cast<size_t>(kTile * (4 * hs + 2) + 2 * kTile) * sizeof(float);
  allow_shared_memory(attention_backward_key_kernel<S>, key_shared);
  attention_backward_key_kernel<S>
      <<<tile_grid(B, T, KV), kThreads, key_shared, ctx.stream>>>(d_qkv, d_out, qkv, lse, delta.f32(), shape, scale);
  CUDA_CHECK_LAUNCH();
  const size_t query_shared = static_cast<size_t>(kTile * (4 * hs + 2)) * sizeof(float);
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

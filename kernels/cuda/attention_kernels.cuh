// Attention kernels (the flash-style forward, and the backward's delta, key and query kernels); see attention.cu
// for the math and the tiling.
// Private to kernels/cuda: included by attention.cu, which launches them, and by the SIMT emulation test
// (tests/simt), which runs them on the host. Names stay in an unnamed namespace, one copy per including file.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/storage.cuh"

namespace tessera::cuda {

namespace {

constexpr int kTile = 32;
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = kTile / kWarps;
constexpr int kMaxHeadSize = 128;           // kMaxAttentionHeadSize of attention.h, which attention.cu asserts
constexpr int kChunks = kMaxHeadSize / 32;  // columns d = lane + 32 c, c < kChunks

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
  TS_DYNAMIC_SHARED(float, shared);
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
  TS_DYNAMIC_SHARED(float, shared);
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
  TS_DYNAMIC_SHARED(float, shared);
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

// Host side of the launches: grids, shapes and dynamic shared memory per kernel (the tiles of the kernels'
// comments).
// Grid (tiles of T, heads, B) for `heads` query heads (or key/value heads).
inline dim3 tile_grid(int64_t B, int64_t T, int64_t heads) {
  return dim3(static_cast<unsigned>((T + kTile - 1) / kTile), static_cast<unsigned>(heads), static_cast<unsigned>(B));
}

inline Heads heads_of(int64_t T, int64_t H, int64_t KV, int64_t hs) {
  return Heads{static_cast<int>(T), static_cast<int>(H), static_cast<int>(KV), static_cast<int>(hs)};
}

// Q, K (padded) and V tiles.
inline size_t forward_shared_bytes(int64_t hs) { return static_cast<size_t>(kTile * (3 * hs + 1)) * sizeof(float); }
// Two tiles of kTile x (hs + 1) and two of kTile x hs, plus lse and delta for the key kernel.
inline size_t backward_key_shared_bytes(int64_t hs) {
  return static_cast<size_t>(kTile * (4 * hs + 2) + 2 * kTile) * sizeof(float);
}
inline size_t backward_query_shared_bytes(int64_t hs) {
  return static_cast<size_t>(kTile * (4 * hs + 2)) * sizeof(float);
}
// The delta kernel: one warp per (b, t, h) row.
inline unsigned delta_blocks(int64_t rows) { return static_cast<unsigned>((rows + kWarps - 1) / kWarps); }

}  // namespace

}  // namespace tessera::cuda

// LayerNorm kernels; see layernorm.cu.
// Private to kernels/cuda: included by layernorm.cu, which launches them, and by the SIMT emulation test
// (tests/simt), which runs them on the host. Names stay in an unnamed namespace, one copy per including file.
#pragma once

#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/storage.cuh"

namespace tessera::cuda {

namespace {

constexpr int kRowThreads = 256;  // 8 rows per block
constexpr int kRowsPerBlock = kRowThreads / 32;
constexpr int kTileColumns = 32;
constexpr int kTileRows = 8;
constexpr int kMaxChunks = 128;

// Normalizes row x (already in memory as T) into y and returns through mean/rstd. Called by a whole warp.
template <typename T>
__device__ void normalize_row(T* y, float* mean, float* rstd, const T* x, const T* weight, const T* bias, float eps,
                              int64_t C, int lane) {
  float sum = 0.0f;
  for (int64_t j = lane; j < C; j += 32) sum += to_float(x[j]);
  const float m = warp_sum(sum) / static_cast<float>(C);
  float var = 0.0f;
  for (int64_t j = lane; j < C; j += 32) {
    const float d = to_float(x[j]) - m;
    var += d * d;
  }
  const float s = 1.0f / sqrtf(warp_sum(var) / static_cast<float>(C) + eps);
  for (int64_t j = lane; j < C; j += 32) {
    y[j] = from_float<T>((to_float(x[j]) - m) * s * to_float(weight[j]) + to_float(bias[j]));
  }
  if (lane == 0) {
    *mean = m;
    *rstd = s;
  }
}

template <typename T>
__global__ void layernorm_forward_kernel(T* out, float* mean, float* rstd, const T* inp, const T* weight, const T* bias,
                                         float eps, int64_t N, int64_t C) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;  // the whole warp: rows are per warp
  normalize_row(out + row * C, mean + row, rstd + row, inp + row * C, weight, bias, eps, C, lane);
}

// Not __restrict__: residual_out may alias a or b.
template <typename T>
__global__ void residual_layernorm_forward_kernel(T* residual_out, T* out, float* mean, float* rstd, const T* a,
                                                  const T* b, const T* weight, const T* bias, float eps, int64_t N,
                                                  int64_t C) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  T* r = residual_out + row * C;
  for (int64_t j = lane; j < C; j += 32) r[j] = from_float<T>(to_float(a[row * C + j]) + to_float(b[row * C + j]));
  // The lane reads back exactly the columns j = lane (mod 32) it wrote: its own writes, visible without a fence.
  normalize_row(out + row * C, mean + row, rstd + row, static_cast<const T*>(r), weight, bias, eps, C, lane);
}

template <typename T>
__global__ void layernorm_backward_input_kernel(T* d_inp, const T* d_out, const T* inp, const T* weight,
                                                const float* mean, const float* rstd, int64_t N, int64_t C) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const T* x = inp + row * C;
  const T* dy = d_out + row * C;
  const float m = mean[row], s = rstd[row];
  float dnorm_sum = 0.0f, dnorm_norm_sum = 0.0f;
  for (int64_t j = lane; j < C; j += 32) {
    const float norm = (to_float(x[j]) - m) * s;
    const float dnorm = to_float(weight[j]) * to_float(dy[j]);
    dnorm_sum += dnorm;
    dnorm_norm_sum += dnorm * norm;
  }
  const float dnorm_mean = warp_sum(dnorm_sum) / static_cast<float>(C);
  const float dnorm_norm_mean = warp_sum(dnorm_norm_sum) / static_cast<float>(C);
  T* dx = d_inp + row * C;
  for (int64_t j = lane; j < C; j += 32) {
    const float norm = (to_float(x[j]) - m) * s;
    const float dnorm = to_float(weight[j]) * to_float(dy[j]);
    dx[j] = from_float<T>(to_float(dx[j]) + (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s);
  }
}

// Block (kTileColumns x kTileRows) sums rows [chunk * rows_per_chunk, ...) of a tile of 32 columns into
// partial[chunk][2][C]: [0] for d_weight, [1] for d_bias.
template <typename T>
__global__ void layernorm_backward_params_kernel(float* partial, const T* d_out, const T* inp, const float* mean,
                                                 const float* rstd, int64_t N, int64_t C, int64_t rows_per_chunk) {
  __shared__ float weight_sums[kTileRows][kTileColumns];
  __shared__ float bias_sums[kTileRows][kTileColumns];
  const int64_t j = blockIdx.x * static_cast<int64_t>(kTileColumns) + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t begin = chunk * rows_per_chunk;
  const int64_t end = begin + rows_per_chunk < N ? begin + rows_per_chunk : N;
  float dw = 0.0f, db = 0.0f;
  if (j < C) {
    for (int64_t i = begin + threadIdx.y; i < end; i += kTileRows) {
      const float dy = to_float(d_out[i * C + j]);
      dw += dy * ((to_float(inp[i * C + j]) - mean[i]) * rstd[i]);
      db += dy;
    }
  }
  weight_sums[threadIdx.y][threadIdx.x] = dw;
  bias_sums[threadIdx.y][threadIdx.x] = db;
  __syncthreads();
  if (threadIdx.y == 0 && j < C) {
    for (int r = 1; r < kTileRows; ++r) {
      dw += weight_sums[r][threadIdx.x];
      db += bias_sums[r][threadIdx.x];
    }
    partial[(chunk * 2) * C + j] = dw;
    partial[(chunk * 2 + 1) * C + j] = db;
  }
}

__global__ void layernorm_backward_params_sum_kernel(float* d_weight, float* d_bias, const float* partial,
                                                     int64_t chunks, int64_t C) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= C) return;
  float dw = 0.0f, db = 0.0f;
  for (int64_t c = 0; c < chunks; ++c) {
    dw += partial[(c * 2) * C + j];
    db += partial[(c * 2 + 1) * C + j];
  }
  d_weight[j] += dw;
  d_bias[j] += db;
}

inline unsigned row_blocks(int64_t N) { return static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock); }

// The parameter gradients' row chunks: enough to fill the GPU, each at least a few tile heights long,
// `rows` rows each (the last may be shorter), `count` of them.
struct RowChunks {
  int64_t count;
  int64_t rows;
};
inline RowChunks row_chunks_of(int64_t N) {
  int64_t chunks = (N + 4 * kTileRows - 1) / (4 * kTileRows);
  if (chunks > kMaxChunks) chunks = kMaxChunks;
  const int64_t rows_per_chunk = (N + chunks - 1) / chunks;
  return {(N + rows_per_chunk - 1) / rows_per_chunk, rows_per_chunk};
}

}  // namespace

}  // namespace tessera::cuda

// LayerNorm forward/backward and the fused residual + LayerNorm forward.
//
// Forward and the input gradient: one warp per row; each lane walks columns lane, lane+32, ... and the warp
// reduces (f32). Mean first, then the variance as the mean of squared deviations (two passes, as the CPU twin).
// The row is read from global memory in each pass (it stays in L1/L2 at GPT widths). Every lane reads back only
// the columns it wrote itself, so the fused kernel needs no synchronization between writing residual_out and
// normalizing it, and residual_out may alias a or b (each element is read before the same thread writes it).
// Parameter gradients, d_weight[j] += sum_i d_out[i,j] * norm[i,j] and d_bias[j] += sum_i d_out[i,j], are
// column sums: a grid of (column tiles x row chunks) writes per-chunk partial sums, then one thread per
// column adds the chunks in order. Both steps have a fixed summation order, so results are reproducible.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/layernorm.h"
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

unsigned row_blocks(int64_t N) { return static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock); }

}  // namespace

template <typename T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* weight, const T* bias, float eps,
                       int64_t N, int64_t C, const Context& ctx) {
  if (N == 0) return;
  layernorm_forward_kernel<<<row_blocks(N), kRowThreads, 0, ctx.stream>>>(out, mean, rstd, inp, weight, bias, eps, N,
                                                                          C);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void residual_layernorm_forward(T* residual_out, T* out, float* mean, float* rstd, const T* a, const T* b,
                                const T* weight, const T* bias, float eps, int64_t N, int64_t C, const Context& ctx) {
  if (N == 0) return;
  residual_layernorm_forward_kernel<<<row_blocks(N), kRowThreads, 0, ctx.stream>>>(residual_out, out, mean, rstd, a, b,
                                                                                   weight, bias, eps, N, C);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void layernorm_backward(T* d_inp, float* d_weight, float* d_bias, const T* d_out, const T* inp, const T* weight,
                        const float* mean, const float* rstd, int64_t N, int64_t C, const Context& ctx) {
  if (N == 0 || C == 0) return;
  layernorm_backward_input_kernel<<<row_blocks(N), kRowThreads, 0, ctx.stream>>>(d_inp, d_out, inp, weight, mean, rstd,
                                                                                 N, C);
  CUDA_CHECK_LAUNCH();

  // Enough row chunks to fill the GPU, each at least a few tile heights long.
  const int64_t column_tiles = (C + kTileColumns - 1) / kTileColumns;
  int64_t chunks = (N + 4 * kTileRows - 1) / (4 * kTileRows);
  if (chunks > kMaxChunks) chunks = kMaxChunks;
  const int64_t rows_per_chunk = (N + chunks - 1) / chunks;
  chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
  Scratch partial(ctx, static_cast<size_t>(chunks * 2 * C) * sizeof(float));
  const dim3 grid(static_cast<unsigned>(column_tiles), static_cast<unsigned>(chunks));
  const dim3 block(kTileColumns, kTileRows);
  layernorm_backward_params_kernel<<<grid, block, 0, ctx.stream>>>(partial.f32(), d_out, inp, mean, rstd, N, C,
                                                                   rows_per_chunk);
  CUDA_CHECK_LAUNCH();
  layernorm_backward_params_sum_kernel<<<static_cast<unsigned>((C + 255) / 256), 256, 0, ctx.stream>>>(
      d_weight, d_bias, partial.f32(), chunks, C);
  CUDA_CHECK_LAUNCH();
}

#define TS_INSTANTIATE(T)                                                                                            \
  template void layernorm_forward<T>(T*, float*, float*, const T*, const T*, const T*, float, int64_t, int64_t,      \
                                     const Context&);                                                                \
  template void residual_layernorm_forward<T>(T*, T*, float*, float*, const T*, const T*, const T*, const T*, float, \
                                              int64_t, int64_t, const Context&);                                     \
  template void layernorm_backward<T>(T*, float*, float*, const T*, const T*, const T*, const float*, const float*,  \
                                      int64_t, int64_t, const Context&);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
#undef TS_INSTANTIATE

}  // namespace tessera::cuda

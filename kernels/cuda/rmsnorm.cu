// RMSNorm forward/backward and the fused residual + RMSNorm forward, laid out as layernorm.cu.
//
// Forward and the input gradient: one warp per row; each lane walks columns lane, lane+32, ... and the warp
// reduces in f32. With r = rstd and y = x r w (the CPU twin's formulas):
//   dx = r (w dy - x r^2 mean(dy w x)),   d_weight[j] += sum_i dy[i,j] x[i,j] r_i.
// Every lane reads back only the columns it wrote itself, so the fused kernel needs no synchronization between
// writing residual_out and normalizing it, and residual_out may alias a or b. d_weight is a column sum: a grid of
// (column tiles x row chunks) writes per-chunk partial sums, then one thread per column adds the chunks in order.
// Both steps have a fixed summation order, so results are reproducible.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/storage.cuh"

namespace tessera::cuda {

namespace {

constexpr int kRowThreads = 256;  // 8 rows per block
constexpr int kRowsPerBlock = kRowThreads / 32;
constexpr int kTileColumns = 32;
constexpr int kTileRows = 8;
constexpr int kMaxChunks = 128;

// Normalizes row x (already in memory as T) into y and stores its rstd. Called by a whole warp.
template <typename T>
__device__ void normalize_row(T* y, float* rstd, const T* x, const T* weight, float eps, int64_t C, int lane) {
  float sum_squares = 0.0f;
  for (int64_t j = lane; j < C; j += 32) {
    const float v = to_float(x[j]);
    sum_squares += v * v;
  }
  const float s = 1.0f / sqrtf(warp_sum(sum_squares) / static_cast<float>(C) + eps);
  for (int64_t j = lane; j < C; j += 32) y[j] = from_float<T>(to_float(x[j]) * s * to_float(weight[j]));
  if (lane == 0) *rstd = s;
}

template <typename T>
__global__ void rmsnorm_forward_kernel(T* out, float* rstd, const T* inp, const T* weight, float eps, int64_t N,
                                       int64_t C) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;  // the whole warp: rows are per warp
  normalize_row(out + row * C, rstd + row, inp + row * C, weight, eps, C, lane);
}

// Not __restrict__: residual_out may alias a or b.
template <typename T>
__global__ void residual_rmsnorm_forward_kernel(T* residual_out, T* out, float* rstd, const T* a, const T* b,
                                                const T* weight, float eps, int64_t N, int64_t C) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  T* r = residual_out + row * C;
  for (int64_t j = lane; j < C; j += 32) r[j] = from_float<T>(to_float(a[row * C + j]) + to_float(b[row * C + j]));
  // The lane reads back exactly the columns j = lane (mod 32) it wrote: its own writes, visible without a fence.
  normalize_row(out + row * C, rstd + row, static_cast<const T*>(r), weight, eps, C, lane);
}

template <typename T>
__global__ void rmsnorm_backward_input_kernel(T* d_inp, const T* d_out, const T* inp, const T* weight,
                                              const float* rstd, int64_t N, int64_t C) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const T* x = inp + row * C;
  const T* dy = d_out + row * C;
  const float s = rstd[row];
  float dot = 0.0f;
  for (int64_t j = lane; j < C; j += 32) dot += to_float(dy[j]) * to_float(weight[j]) * to_float(x[j]);
  const float correction = warp_sum(dot) / static_cast<float>(C) * s * s;
  T* dx = d_inp + row * C;
  for (int64_t j = lane; j < C; j += 32) {
    const float grad = s * (to_float(weight[j]) * to_float(dy[j]) - to_float(x[j]) * correction);
    dx[j] = from_float<T>(to_float(dx[j]) + grad);
  }
}

// Block (kTileColumns x kTileRows) sums rows [chunk * rows_per_chunk, ...) of a tile of 32 columns into
// partial[chunk][C].
template <typename T>
__global__ void rmsnorm_backward_weight_kernel(float* partial, const T* d_out, const T* inp, const float* rstd,
                                               int64_t N, int64_t C, int64_t rows_per_chunk) {
  __shared__ float sums[kTileRows][kTileColumns];
  const int64_t j = blockIdx.x * static_cast<int64_t>(kTileColumns) + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t begin = chunk * rows_per_chunk;
  const int64_t end = begin + rows_per_chunk < N ? begin + rows_per_chunk : N;
  float dw = 0.0f;
  if (j < C) {
    for (int64_t i = begin + threadIdx.y; i < end; i += kTileRows) {
      dw += to_float(d_out[i * C + j]) * to_float(inp[i * C + j]) * rstd[i];
    }
  }
  sums[threadIdx.y][threadIdx.x] = dw;
  __syncthreads();
  if (threadIdx.y == 0 && j < C) {
    for (int r = 1; r < kTileRows; ++r) dw += sums[r][threadIdx.x];
    partial[chunk * C + j] = dw;
  }
}

__global__ void rmsnorm_backward_weight_sum_kernel(float* d_weight, const float* partial, int64_t chunks, int64_t C) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= C) return;
  float dw = 0.0f;
  for (int64_t c = 0; c < chunks; ++c) dw += partial[c * C + j];
  d_weight[j] += dw;
}

unsigned row_blocks(int64_t N) { return static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock); }

}  // namespace

template <typename T>
void rmsnorm_forward(T* out, float* rstd, const T* inp, const T* weight, float eps, int64_t N, int64_t C,
                     const Context& ctx) {
  if (N == 0) return;
  rmsnorm_forward_kernel<<<row_blocks(N), kRowThreads, 0, ctx.stream>>>(out, rstd, inp, weight, eps, N, C);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void residual_rmsnorm_forward(T* residual_out, T* out, float* rstd, const T* a, const T* b, const T* weight, float eps,
                              int64_t N, int64_t C, const Context& ctx) {
  if (N == 0) return;
  residual_rmsnorm_forward_kernel<<<row_blocks(N), kRowThreads, 0, ctx.stream>>>(residual_out, out, rstd, a, b, weight,
                                                                                 eps, N, C);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void rmsnorm_backward(T* d_inp, float* d_weight, const T* d_out, const T* inp, const T* weight, const float* rstd,
                      int64_t N, int64_t C, const Context& ctx) {
  if (N == 0 || C == 0) return;
  rmsnorm_backward_input_kernel<<<row_blocks(N), kRowThreads, 0, ctx.stream>>>(d_inp, d_out, inp, weight, rstd, N, C);
  CUDA_CHECK_LAUNCH();

  // Enough row chunks to fill the GPU, each at least a few tile heights long (as layernorm_backward).
  const int64_t column_tiles = (C + kTileColumns - 1) / kTileColumns;
  int64_t chunks = (N + 4 * kTileRows - 1) / (4 * kTileRows);
  if (chunks > kMaxChunks) chunks = kMaxChunks;
  const int64_t rows_per_chunk = (N + chunks - 1) / chunks;
  chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
  Scratch partial(ctx, static_cast<size_t>(chunks * C) * sizeof(float));
  const dim3 grid(static_cast<unsigned>(column_tiles), static_cast<unsigned>(chunks));
  const dim3 block(kTileColumns, kTileRows);
  rmsnorm_backward_weight_kernel<<<grid, block, 0, ctx.stream>>>(partial.f32(), d_out, inp, rstd, N, C, rows_per_chunk);
  CUDA_CHECK_LAUNCH();
  rmsnorm_backward_weight_sum_kernel<<<static_cast<unsigned>((C + 255) / 256), 256, 0, ctx.stream>>>(
      d_weight, partial.f32(), chunks, C);
  CUDA_CHECK_LAUNCH();
}

#define TS_INSTANTIATE(T)                                                                                          \
  template void rmsnorm_forward<T>(T*, float*, const T*, const T*, float, int64_t, int64_t, const Context&);       \
  template void residual_rmsnorm_forward<T>(T*, T*, float*, const T*, const T*, const T*, float, int64_t, int64_t, \
                                            const Context&);                                                       \
  template void rmsnorm_backward<T>(T*, float*, const T*, const T*, const T*, const float*, int64_t, int64_t,      \
                                    const Context&);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
#undef TS_INSTANTIATE

}  // namespace tessera::cuda

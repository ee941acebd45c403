// LayerNorm forward/backward.
//
// Forward and the input gradient: one warp per row; each lane walks columns lane, lane+32, ... and the warp
// reduces. The row is read from global memory in each pass (it stays in L1/L2 at GPT widths).
// Parameter gradients, d_weight[j] += sum_i d_out[i,j] * norm[i,j] and d_bias[j] += sum_i d_out[i,j], are
// column sums: a grid of (column tiles x row chunks) writes per-chunk partial sums, then one thread per
// column adds the chunks in order. Both steps have a fixed summation order, so results are reproducible.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/layernorm.h"
#include "kernels/cuda/reduce.cuh"

namespace tessera::cuda {

namespace {

constexpr int kRowThreads = 256;  // 8 rows per block
constexpr int kRowsPerBlock = kRowThreads / 32;
constexpr int kTileColumns = 32;
constexpr int kTileRows = 8;
constexpr int kMaxChunks = 128;

__global__ void layernorm_forward_kernel(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                         const float* bias, float eps, int64_t N, int64_t C) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const float* x = inp + row * C;
  float sum = 0.0f;
  for (int64_t j = lane; j < C; j += 32) sum += x[j];
  const float m = warp_sum(sum) / static_cast<float>(C);
  float var = 0.0f;
  for (int64_t j = lane; j < C; j += 32) {
    const float d = x[j] - m;
    var += d * d;
  }
  const float s = 1.0f / sqrtf(warp_sum(var) / static_cast<float>(C) + eps);
  float* y = out + row * C;
  for (int64_t j = lane; j < C; j += 32) y[j] = (x[j] - m) * s * weight[j] + bias[j];
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = s;
  }
}

__global__ void layernorm_backward_input_kernel(float* d_inp, const float* d_out, const float* inp, const float* weight,
                                                const float* mean, const float* rstd, int64_t N, int64_t C) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const float* x = inp + row * C;
  const float* dy = d_out + row * C;
  const float m = mean[row], s = rstd[row];
  float dnorm_sum = 0.0f, dnorm_norm_sum = 0.0f;
  for (int64_t j = lane; j < C; j += 32) {
    const float norm = (x[j] - m) * s;
    const float dnorm = weight[j] * dy[j];
    dnorm_sum += dnorm;
    dnorm_norm_sum += dnorm * norm;
  }
  const float dnorm_mean = warp_sum(dnorm_sum) / static_cast<float>(C);
  const float dnorm_norm_mean = warp_sum(dnorm_norm_sum) / static_cast<float>(C);
  float* dx = d_inp + row * C;
  for (int64_t j = lane; j < C; j += 32) {
    const float norm = (x[j] - m) * s;
    const float dnorm = weight[j] * dy[j];
    dx[j] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
  }
}

// Block (kTileColumns x kTileRows) sums rows [chunk * rows_per_chunk, ...) of a tile of 32 columns into
// partial[chunk][2][C]: [0] for d_weight, [1] for d_bias.
__global__ void layernorm_backward_params_kernel(float* partial, const float* d_out, const float* inp,
                                                 const float* mean, const float* rstd, int64_t N, int64_t C,
                                                 int64_t rows_per_chunk) {
  __shared__ float weight_sums[kTileRows][kTileColumns];
  __shared__ float bias_sums[kTileRows][kTileColumns];
  const int64_t j = blockIdx.x * static_cast<int64_t>(kTileColumns) + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t begin = chunk * rows_per_chunk;
  const int64_t end = begin + rows_per_chunk < N ? begin + rows_per_chunk : N;
  float dw = 0.0f, db = 0.0f;
  if (j < C) {
    for (int64_t i = begin + threadIdx.y; i < end; i += kTileRows) {
      const float dy = d_out[i * C + j];
      dw += dy * (inp[i * C + j] - mean[i]) * rstd[i];
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

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight, const float* bias,
                       float eps, int64_t N, int64_t C, const Context& ctx) {
  if (N == 0) return;
  const unsigned blocks = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
  layernorm_forward_kernel<<<blocks, kRowThreads, 0, ctx.stream>>>(out, mean, rstd, inp, weight, bias, eps, N, C);
  CUDA_CHECK_LAUNCH();
}

void layernorm_backward(float* d_inp, float* d_weight, float* d_bias, const float* d_out, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int64_t N, int64_t C,
                        const Context& ctx) {
  if (N == 0 || C == 0) return;
  const unsigned row_blocks = static_cast<unsigned>((N + kRowsPerBlock - 1) / kRowsPerBlock);
  layernorm_backward_input_kernel<<<row_blocks, kRowThreads, 0, ctx.stream>>>(d_inp, d_out, inp, weight, mean, rstd, N,
                                                                              C);
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

}  // namespace tessera::cuda

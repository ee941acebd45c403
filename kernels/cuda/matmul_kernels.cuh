// The custom kernels of the linear layer's fallbacks (bias broadcast, bias add, deterministic column sums); see
// matmul.cu. The products themselves are cuBLASLt's.
// Private to kernels/cuda: included by matmul.cu, which launches them, and by the SIMT emulation test
// (tests/simt), which runs them on the host. Names stay in an unnamed namespace, one copy per including file.
#pragma once

#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/storage.cuh"

namespace tessera::cuda {

namespace {

constexpr int kTileColumns = 32;
constexpr int kTileRows = 8;
constexpr int kMaxChunks = 128;

template <typename T>
__global__ void broadcast_rows_kernel(T* out, const T* row, int64_t N, int64_t OC) {
  const int64_t n = N * OC;
  for (int64_t i = grid_start(); i < n; i += grid_stride()) out[i] = row[i % OC];
}

// out[i, j] = product[i, j] + bias[j], rounded once to T. product may be out itself (T = float).
template <typename T>
__global__ void add_bias_kernel(T* out, const float* product, const T* bias, int64_t N, int64_t OC) {
  const int64_t n = N * OC;
  for (int64_t i = grid_start(); i < n; i += grid_stride()) out[i] = from_float<T>(product[i] + to_float(bias[i % OC]));
}

// partial[chunk][j] = sum of in[i, j] over the rows of the chunk, in a fixed order, in f32.
template <typename T>
__global__ void column_sums_partial_kernel(float* partial, const T* in, int64_t N, int64_t OC, int64_t rows_per_chunk) {
  __shared__ float sums[kTileRows][kTileColumns];
  const int64_t j = blockIdx.x * static_cast<int64_t>(kTileColumns) + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t begin = chunk * rows_per_chunk;
  const int64_t end = begin + rows_per_chunk < N ? begin + rows_per_chunk : N;
  float sum = 0.0f;
  if (j < OC) {
    for (int64_t i = begin + threadIdx.y; i < end; i += kTileRows) sum += to_float(in[i * OC + j]);
  }
  sums[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && j < OC) {
    for (int r = 1; r < kTileRows; ++r) sum += sums[r][threadIdx.x];
    partial[chunk * OC + j] = sum;
  }
}

// out[j] += sum over chunks of partial[chunk][j].
__global__ void accumulate_chunks_kernel(float* out, const float* partial, int64_t chunks, int64_t OC) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= OC) return;
  float sum = 0.0f;
  for (int64_t c = 0; c < chunks; ++c) sum += partial[c * OC + j];
  out[j] += sum;
}

inline unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

// The column sums' row chunks: enough to fill the GPU, each at least four tile heights long, `rows` rows each
// (the last may be shorter), `count` of them.
struct ColumnSumChunks {
  int64_t count;
  int64_t rows;
};
inline ColumnSumChunks column_sum_chunks(int64_t N) {
  int64_t chunks = (N + 4 * kTileRows - 1) / (4 * kTileRows);
  if (chunks > kMaxChunks) chunks = kMaxChunks;
  const int64_t rows_per_chunk = (N + chunks - 1) / chunks;
  return {(N + rows_per_chunk - 1) / rows_per_chunk, rows_per_chunk};
}

}  // namespace

}  // namespace tessera::cuda

// Linear layer forward/backward: the products through Gemm (cuBLASLt), plus the small kernels of the
// fallbacks when an epilogue is not available (bias broadcast, column sums).
//
// Row-major products, with Gemm's op(A) op(B):
//   forward   out[N,OC]    = inp[N,C] . W[OC,C]^T          (+ bias per column: BIAS epilogue)
//   backward  d_inp[N,C]   = d_out[N,OC] . W[OC,C]
//             d_W[OC,C]   += d_out[N,OC]^T . inp[N,C]      (+ d_bias[OC] = rows of d_out^T summed: BGRADB)
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/reduce.cuh"

namespace tessera::cuda {

namespace {

constexpr int kTileColumns = 32;
constexpr int kTileRows = 8;
constexpr int kMaxChunks = 128;

__global__ void broadcast_rows_kernel(float* out, const float* row, int64_t N, int64_t OC) {
  const int64_t n = N * OC;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = row[i % OC];
  }
}

// partial[chunk][j] = sum of in[i, j] over the rows of the chunk, in a fixed order.
__global__ void column_sums_partial_kernel(float* partial, const float* in, int64_t N, int64_t OC,
                                           int64_t rows_per_chunk) {
  __shared__ float sums[kTileRows][kTileColumns];
  const int64_t j = blockIdx.x * static_cast<int64_t>(kTileColumns) + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t begin = chunk * rows_per_chunk;
  const int64_t end = begin + rows_per_chunk < N ? begin + rows_per_chunk : N;
  float sum = 0.0f;
  if (j < OC) {
    for (int64_t i = begin + threadIdx.y; i < end; i += kTileRows) sum += in[i * OC + j];
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

unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

// out[OC] += column sums of in[N, OC], deterministically.
void accumulate_column_sums(float* out, const float* in, int64_t N, int64_t OC, const Context& ctx) {
  int64_t chunks = (N + 4 * kTileRows - 1) / (4 * kTileRows);
  if (chunks > kMaxChunks) chunks = kMaxChunks;
  const int64_t rows_per_chunk = (N + chunks - 1) / chunks;
  chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
  Scratch partial(ctx, static_cast<size_t>(chunks * OC) * sizeof(float));
  const dim3 grid(blocks_for(OC, kTileColumns), static_cast<unsigned>(chunks));
  column_sums_partial_kernel<<<grid, dim3(kTileColumns, kTileRows), 0, ctx.stream>>>(partial.f32(), in, N, OC,
                                                                                     rows_per_chunk);
  CUDA_CHECK_LAUNCH();
  accumulate_chunks_kernel<<<blocks_for(OC, 256), 256, 0, ctx.stream>>>(out, partial.f32(), chunks, OC);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N, int64_t C,
                    int64_t OC, const Context& ctx) {
  if (N == 0 || OC == 0) return;
  GemmProblem p;
  p.m = N;
  p.n = OC;
  p.k = C;
  p.a = inp;
  p.lda = C;
  p.b = weight;
  p.ldb = C;
  p.transpose_b = true;
  p.d = out;
  p.ldd = OC;
  if (bias != nullptr) {
    p.epilogue = GemmEpilogue::kBias;
    p.vector = const_cast<float*>(bias);  // read only: cuBLASLt takes one pointer for bias and bias gradient
    if (ctx.gemm->try_run(p, ctx.stream)) return;
    // Fallback: out = bias in every row, then out += inp W^T.
    broadcast_rows_kernel<<<grid_size(N * OC, 256), 256, 0, ctx.stream>>>(out, bias, N, OC);
    CUDA_CHECK_LAUNCH();
    p.epilogue = GemmEpilogue::kNone;
    p.vector = nullptr;
    p.beta = 1.0f;
  }
  ctx.gemm->run(p, ctx.stream);
}

void matmul_backward(float* d_inp, float* d_weight, float* d_bias, const float* d_out, const float* inp,
                     const float* weight, int64_t N, int64_t C, int64_t OC, const Context& ctx) {
  if (OC == 0 || C == 0) return;
  if (d_inp != nullptr && N > 0) {
    GemmProblem p;
    p.m = N;
    p.n = C;
    p.k = OC;
    p.a = d_out;
    p.lda = OC;
    p.b = weight;
    p.ldb = C;
    p.d = d_inp;
    p.ldd = C;
    ctx.gemm->run(p, ctx.stream);
  }
  if (N == 0) return;
  GemmProblem p;
  p.m = OC;
  p.n = C;
  p.k = N;
  p.a = d_out;  // stored [N, OC]: op(A) = d_out^T
  p.lda = OC;
  p.transpose_a = true;
  p.b = inp;
  p.ldb = C;
  p.d = d_weight;
  p.ldd = C;
  p.beta = 1.0f;
  if (d_bias != nullptr) {
    // BGRADB writes the bias gradient; the contract accumulates, so it goes to scratch and is added after.
    Scratch column_sums(ctx, static_cast<size_t>(OC) * sizeof(float));
    p.epilogue = GemmEpilogue::kBiasGradient;
    p.vector = column_sums.f32();
    if (ctx.gemm->try_run(p, ctx.stream)) {
      add(d_bias, d_bias, column_sums.f32(), OC, ctx);
      return;
    }
    p.epilogue = GemmEpilogue::kNone;
    p.vector = nullptr;
    accumulate_column_sums(d_bias, d_out, N, OC, ctx);
  }
  ctx.gemm->run(p, ctx.stream);
}

}  // namespace tessera::cuda

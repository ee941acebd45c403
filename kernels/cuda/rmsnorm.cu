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
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/rmsnorm_kernels.cuh"

namespace tessera::cuda {

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

  const int64_t column_tiles = (C + kTileColumns - 1) / kTileColumns;
  const RowChunks row_chunks = row_chunks_of(N);
  const int64_t chunks = row_chunks.count, rows_per_chunk = row_chunks.rows;
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

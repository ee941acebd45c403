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
#include "kernels/cuda/layernorm_kernels.cuh"

namespace tessera::cuda {

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
  const RowChunks row_chunks = row_chunks_of(N);
  const int64_t chunks = row_chunks.count, rows_per_chunk = row_chunks.rows;
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

// Cross-entropy passes: one block per row; the threads stride over the columns and the block reduces.
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/cross_entropy_kernels.cuh"
#include "kernels/cuda/cuda_check.h"

namespace tessera::cuda {

template <typename T>
void cross_entropy_row_max(float* row_max, const T* logits, int64_t N, int64_t V_local, int64_t valid_cols,
                           const Context& ctx) {
  if (N == 0) return;
  row_max_kernel<<<static_cast<unsigned>(N), kThreads, 0, ctx.stream>>>(row_max, logits, V_local,
                                                                        valid(V_local, valid_cols));
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void cross_entropy_row_stats(float* sum_exp, float* target_logit, const T* logits, const float* row_max,
                             const int32_t* targets, int64_t N, int64_t V_local, int64_t vocab_start,
                             int64_t valid_cols, const Context& ctx) {
  if (N == 0) return;
  row_stats_kernel<<<static_cast<unsigned>(N), kThreads, 0, ctx.stream>>>(
      sum_exp, target_logit, logits, row_max, targets, V_local, vocab_start, valid(V_local, valid_cols));
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void cross_entropy_loss_backward(float* losses, T* logits, const float* row_max, const float* sum_exp,
                                 const float* target_logit, const int32_t* targets, const float* weights, int64_t N,
                                 int64_t V_local, int64_t vocab_start, int64_t valid_cols, float d_scale,
                                 const Context& ctx) {
  if (N == 0) return;
  loss_backward_kernel<<<static_cast<unsigned>(N), kThreads, 0, ctx.stream>>>(
      losses, logits, row_max, sum_exp, target_logit, targets, weights, V_local, vocab_start,
      valid(V_local, valid_cols), d_scale);
  CUDA_CHECK_LAUNCH();
}

#define TS_INSTANTIATE(T)                                                                                            \
  template void cross_entropy_row_max<T>(float*, const T*, int64_t, int64_t, int64_t, const Context&);               \
  template void cross_entropy_row_stats<T>(float*, float*, const T*, const float*, const int32_t*, int64_t, int64_t, \
                                           int64_t, int64_t, const Context&);                                        \
  template void cross_entropy_loss_backward<T>(float*, T*, const float*, const float*, const float*, const int32_t*, \
                                               const float*, int64_t, int64_t, int64_t, int64_t, float,              \
                                               const Context&);
TS_INSTANTIATE(float)
TS_INSTANTIATE(bf16)
#undef TS_INSTANTIATE

}  // namespace tessera::cuda

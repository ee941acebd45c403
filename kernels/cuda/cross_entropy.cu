// Cross-entropy passes: one block per row; the threads stride over the columns and the block reduces.
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/storage.cuh"

namespace tessera::cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void row_max_kernel(float* row_max, const T* logits, int64_t V_local, int64_t cols) {
  const T* row = logits + blockIdx.x * V_local;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, to_float(row[j]));
  m = block_max(m);
  if (threadIdx.x == 0) row_max[blockIdx.x] = m;
}

template <typename T>
__global__ void row_stats_kernel(float* sum_exp, float* target_logit, const T* logits, const float* row_max,
                                 const int32_t* targets, int64_t V_local, int64_t vocab_start, int64_t cols) {
  const int64_t i = blockIdx.x;
  const T* row = logits + i * V_local;
  const float m = row_max[i];
  double sum = 0.0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) sum += expf(to_float(row[j]) - m);
  sum = block_sum(sum);
  if (threadIdx.x == 0) {
    sum_exp[i] = static_cast<float>(sum);
    const int64_t t = static_cast<int64_t>(targets[i]) - vocab_start;
    target_logit[i] = (t >= 0 && t < cols) ? to_float(row[t]) : 0.0f;
  }
}

template <typename T>
__global__ void loss_backward_kernel(float* losses, T* logits, const float* row_max, const float* sum_exp,
                                     const float* target_logit, const int32_t* targets, const float* weights,
                                     int64_t V_local, int64_t vocab_start, int64_t cols, float d_scale) {
  const int64_t i = blockIdx.x;
  T* row = logits + i * V_local;
  const float m = row_max[i];
  // With weights of 1 this is d_scale exactly, as on the CPU.
  const float row_scale = weights != nullptr ? d_scale * weights[i] : d_scale;
  const float scale = 1.0f / sum_exp[i] * row_scale;
  const int64_t t = static_cast<int64_t>(targets[i]) - vocab_start;
  if (threadIdx.x == 0) losses[i] = logf(sum_exp[i]) + m - target_logit[i];
  // Each element is read and then overwritten by the same thread.
  for (int64_t j = threadIdx.x; j < V_local; j += blockDim.x) {
    float grad = 0.0f;
    if (j < cols) {
      grad = expf(to_float(row[j]) - m) * scale;
      if (j == t) grad -= row_scale;
    }
    row[j] = from_float<T>(grad);
  }
}

int64_t valid(int64_t V_local, int64_t valid_cols) { return valid_cols < V_local ? valid_cols : V_local; }

}  // namespace

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

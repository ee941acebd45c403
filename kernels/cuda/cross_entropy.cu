// Cross-entropy passes: one block per row; the threads stride over the columns and the block reduces.
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/reduce.cuh"

namespace tessera::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void row_max_kernel(float* row_max, const float* logits, int64_t V_local, int64_t cols) {
  const float* row = logits + blockIdx.x * V_local;
  float m = -INFINITY;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, row[j]);
  m = block_max(m);
  if (threadIdx.x == 0) row_max[blockIdx.x] = m;
}

__global__ void row_stats_kernel(float* sum_exp, float* target_logit, const float* logits, const float* row_max,
                                 const int32_t* targets, int64_t V_local, int64_t vocab_start, int64_t cols) {
  const int64_t i = blockIdx.x;
  const float* row = logits + i * V_local;
  const float m = row_max[i];
  double sum = 0.0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) sum += expf(row[j] - m);
  sum = block_sum(sum);
  if (threadIdx.x == 0) {
    sum_exp[i] = static_cast<float>(sum);
    const int64_t t = static_cast<int64_t>(targets[i]) - vocab_start;
    target_logit[i] = (t >= 0 && t < cols) ? row[t] : 0.0f;
  }
}

__global__ void loss_backward_kernel(float* losses, float* logits, const float* row_max, const float* sum_exp,
                                     const float* target_logit, const int32_t* targets, int64_t V_local,
                                     int64_t vocab_start, int64_t cols, float d_scale) {
  const int64_t i = blockIdx.x;
  float* row = logits + i * V_local;
  const float m = row_max[i];
  const float inv_sum = 1.0f / sum_exp[i];
  const int64_t t = static_cast<int64_t>(targets[i]) - vocab_start;
  if (threadIdx.x == 0) losses[i] = logf(sum_exp[i]) + m - target_logit[i];
  for (int64_t j = threadIdx.x; j < V_local; j += blockDim.x) {
    float grad = 0.0f;
    if (j < cols) {
      grad = expf(row[j] - m) * inv_sum * d_scale;
      if (j == t) grad -= d_scale;
    }
    row[j] = grad;
  }
}

int64_t valid(int64_t V_local, int64_t valid_cols) { return valid_cols < V_local ? valid_cols : V_local; }

}  // namespace

void cross_entropy_row_max(float* row_max, const float* logits, int64_t N, int64_t V_local, int64_t valid_cols,
                           const Context& ctx) {
  if (N == 0) return;
  row_max_kernel<<<static_cast<unsigned>(N), kThreads, 0, ctx.stream>>>(row_max, logits, V_local,
                                                                        valid(V_local, valid_cols));
  CUDA_CHECK_LAUNCH();
}

void cross_entropy_row_stats(float* sum_exp, float* target_logit, const float* logits, const float* row_max,
                             const int32_t* targets, int64_t N, int64_t V_local, int64_t vocab_start,
                             int64_t valid_cols, const Context& ctx) {
  if (N == 0) return;
  row_stats_kernel<<<static_cast<unsigned>(N), kThreads, 0, ctx.stream>>>(
      sum_exp, target_logit, logits, row_max, targets, V_local, vocab_start, valid(V_local, valid_cols));
  CUDA_CHECK_LAUNCH();
}

void cross_entropy_loss_backward(float* losses, float* logits, const float* row_max, const float* sum_exp,
                                 const float* target_logit, const int32_t* targets, int64_t N, int64_t V_local,
                                 int64_t vocab_start, int64_t valid_cols, float d_scale, const Context& ctx) {
  if (N == 0) return;
  loss_backward_kernel<<<static_cast<unsigned>(N), kThreads, 0, ctx.stream>>>(
      losses, logits, row_max, sum_exp, target_logit, targets, V_local, vocab_start, valid(V_local, valid_cols),
      d_scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace tessera::cuda

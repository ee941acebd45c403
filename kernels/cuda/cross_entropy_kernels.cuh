// Cross-entropy kernels (row max, row statistics, loss and gradient); see cross_entropy.cu.
// Private to kernels/cuda: included by cross_entropy.cu, which launches them, and by the SIMT emulation test
// (tests/simt), which runs them on the host. Names stay in an unnamed namespace, one copy per including file.
#pragma once

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

inline int64_t valid(int64_t V_local, int64_t valid_cols) { return valid_cols < V_local ? valid_cols : V_local; }

}  // namespace

}  // namespace tessera::cuda

// Cross-entropy passes. The sum of exponentials is accumulated in double: rows are up to 50k wide.
#include "kernels/cpu/cross_entropy.h"

#include <cmath>

#include "kernels/cpu/fast_math.h"

namespace tessera::cpu {

void cross_entropy_row_max(float* row_max, const float* logits, int64_t N, int64_t V_local, int64_t valid_cols) {
  int64_t cols = valid_cols < V_local ? valid_cols : V_local;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < N; ++i) {
    const float* row = logits + i * V_local;
    float max = -INFINITY;
    for (int64_t j = 0; j < cols; ++j) max = row[j] > max ? row[j] : max;
    row_max[i] = max;
  }
}

void cross_entropy_row_stats(float* sum_exp, float* target_logit, const float* logits, const float* row_max,
                             const int32_t* targets, int64_t N, int64_t V_local, int64_t vocab_start,
                             int64_t valid_cols) {
  int64_t cols = valid_cols < V_local ? valid_cols : V_local;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < N; ++i) {
    const float* row = logits + i * V_local;
    float m = row_max[i];
    // Blocks of float sums (vectorized), added up in double.
    double sum = 0;
    for (int64_t j0 = 0; j0 < cols; j0 += 256) {
      const int64_t j1 = j0 + 256 < cols ? j0 + 256 : cols;
      float block = 0;
#pragma omp simd reduction(+ : block)
      for (int64_t j = j0; j < j1; ++j) block += exp_approx(row[j] - m);
      sum += block;
    }
    sum_exp[i] = static_cast<float>(sum);
    int64_t t = static_cast<int64_t>(targets[i]) - vocab_start;
    target_logit[i] = (t >= 0 && t < cols) ? row[t] : 0.0f;
  }
}

void cross_entropy_loss_backward(float* losses, float* logits, const float* row_max, const float* sum_exp,
                                 const float* target_logit, const int32_t* targets, const float* weights, int64_t N,
                                 int64_t V_local, int64_t vocab_start, int64_t valid_cols, float d_scale) {
  int64_t cols = valid_cols < V_local ? valid_cols : V_local;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < N; ++i) {
    float* row = logits + i * V_local;
    float m = row_max[i];
    float inv_sum = 1.0f / sum_exp[i];
    losses[i] = std::log(sum_exp[i]) + m - target_logit[i];
    // With weights of 1 this is d_scale exactly: unweighted training gets the same bits either way.
    const float row_scale = weights != nullptr ? d_scale * weights[i] : d_scale;
    const float scale = inv_sum * row_scale;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) row[j] = exp_approx(row[j] - m) * scale;
    for (int64_t j = cols; j < V_local; ++j) row[j] = 0.0f;
    int64_t t = static_cast<int64_t>(targets[i]) - vocab_start;
    if (t >= 0 && t < cols) row[t] -= row_scale;
  }
}

}  // namespace tessera::cpu

// Vocab-parallel softmax cross-entropy on CPU, in three passes so that tensor-parallel ranks can combine
// their row statistics between them. logits[N, V_local] hold entries [vocab_start, vocab_start + V_local);
// columns >= valid_cols are padding and are excluded.
#pragma once

#include <cstdint>

namespace tessera::cpu {

void cross_entropy_row_max(float* row_max, const float* logits, int64_t N, int64_t V_local, int64_t valid_cols);
void cross_entropy_row_stats(float* sum_exp, float* target_logit, const float* logits, const float* row_max,
                             const int32_t* targets, int64_t N, int64_t V_local, int64_t vocab_start,
                             int64_t valid_cols);
// losses[N] = log(sum_exp) + row_max - target_logit; row i of logits becomes
// d_scale * weights[i] * (softmax - onehot), or d_scale * (softmax - onehot) when weights is null.
void cross_entropy_loss_backward(float* losses, float* logits, const float* row_max, const float* sum_exp,
                                 const float* target_logit, const int32_t* targets, const float* weights, int64_t N,
                                 int64_t V_local, int64_t vocab_start, int64_t valid_cols, float d_scale);

}  // namespace tessera::cpu

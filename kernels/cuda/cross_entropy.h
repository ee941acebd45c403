// Vocab-parallel softmax cross-entropy on CUDA, in the three passes of the CPU twin
// (kernels/cpu/cross_entropy.h) so that tensor-parallel ranks can combine row statistics between them.
// logits[N, V_local] hold entries [vocab_start, vocab_start + V_local); columns >= valid_cols are padding.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"

namespace tessera::cuda {

void cross_entropy_row_max(float* row_max, const float* logits, int64_t N, int64_t V_local, int64_t valid_cols,
                           const Context& ctx);
// The sum of exponentials is accumulated in double, as on the CPU.
void cross_entropy_row_stats(float* sum_exp, float* target_logit, const float* logits, const float* row_max,
                             const int32_t* targets, int64_t N, int64_t V_local, int64_t vocab_start,
                             int64_t valid_cols, const Context& ctx);
// losses[N] = log(sum_exp) + row_max - target_logit; logits becomes d_scale * (softmax - onehot).
void cross_entropy_loss_backward(float* losses, float* logits, const float* row_max, const float* sum_exp,
                                 const float* target_logit, const int32_t* targets, int64_t N, int64_t V_local,
                                 int64_t vocab_start, int64_t valid_cols, float d_scale, const Context& ctx);

}  // namespace tessera::cuda

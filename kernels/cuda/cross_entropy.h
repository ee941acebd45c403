// Vocab-parallel softmax cross-entropy on CUDA, in the three passes of the CPU twin
// (kernels/cpu/cross_entropy.h) so that tensor-parallel ranks can combine row statistics between them.
// logits[N, V_local] hold entries [vocab_start, vocab_start + V_local); columns >= valid_cols are padding.
// Logits are T (float or bf16, the compute dtype); row_max, sum_exp, target_logit and losses are f32. Together
// the passes are the fused classifier: the probabilities are never stored, only the gradient, in place.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype.h"

namespace tessera::cuda {

template <typename T>
void cross_entropy_row_max(float* row_max, const T* logits, int64_t N, int64_t V_local, int64_t valid_cols,
                           const Context& ctx);
// The sum of exponentials is accumulated in double, as on the CPU.
template <typename T>
void cross_entropy_row_stats(float* sum_exp, float* target_logit, const T* logits, const float* row_max,
                             const int32_t* targets, int64_t N, int64_t V_local, int64_t vocab_start,
                             int64_t valid_cols, const Context& ctx);
// losses[N] = log(sum_exp) + row_max - target_logit; row i of logits becomes d_scale * weights[i] *
// (softmax - onehot) (weights null: d_scale * (softmax - onehot)), rounded once to T, zero in the padding columns.
template <typename T>
void cross_entropy_loss_backward(float* losses, T* logits, const float* row_max, const float* sum_exp,
                                 const float* target_logit, const int32_t* targets, const float* weights, int64_t N,
                                 int64_t V_local, int64_t vocab_start, int64_t valid_cols, float d_scale,
                                 const Context& ctx);

}  // namespace tessera::cuda

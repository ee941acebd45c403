// Tensor-parallel layers: the partitioning math is in the header.
#include "parallel/tensor_parallel.h"

#include "core/check.h"
#include "core/trace.h"

namespace tessera {

void all_reduce_tp(ProcessGroup& tp, Tensor t, ReduceOp op) {
  if (tp.size() <= 1) return;
  trace::Span span(trace::Track::kTensorParallel, "tp", op == ReduceOp::kMax ? "tp all-reduce max" : "tp all-reduce");
  if (span.on()) span.arg("bytes", static_cast<int64_t>(t.bytes()));
  tp.all_reduce(t, op)->wait();
}

void ColumnParallelLinear::forward(Tensor out, Tensor inp, Tensor weight, Tensor bias) const {
  backend_.matmul_forward(out, inp, weight, bias);
}

void ColumnParallelLinear::forward_gelu(Tensor out_gelu, Tensor pre_gelu, Tensor inp, Tensor weight,
                                        Tensor bias) const {
  backend_.matmul_gelu_forward(out_gelu, pre_gelu, inp, weight, bias);
}

void ColumnParallelLinear::backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp,
                                    Tensor weight) const {
  backend_.matmul_backward(d_inp, d_weight, d_bias, d_out, inp, weight);
  all_reduce_tp(tp_, d_inp);
}

void RowParallelLinear::forward(Tensor out, Tensor inp, Tensor weight, Tensor bias) const {
  // Every rank adds its input features' share; the replicated bias is added once (TP rank 0).
  backend_.matmul_forward(out, inp, weight, tp_.rank() == 0 ? bias : Tensor());
  all_reduce_tp(tp_, out);
}

void RowParallelLinear::backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp,
                                 Tensor weight) const {
  backend_.matmul_backward(d_inp, d_weight, d_bias, d_out, inp, weight);
}

void VocabParallelEmbedding::forward(Tensor out, Tensor tokens, Tensor table, Tensor positions, int seq_len) const {
  // Each TP rank looks up its vocabulary rows (zeros elsewhere), the position embedding is added once (on TP
  // rank 0), and the all-reduce completes every row on every rank.
  backend_.embedding_forward(out, tokens, table, tp_.rank() == 0 ? positions : Tensor(), seq_len, vocab_start_);
  all_reduce_tp(tp_, out);
}

void VocabParallelEmbedding::backward(Tensor d_table, Tensor d_positions, Tensor d_out, Tensor tokens,
                                      int seq_len) const {
  // Every TP rank holds the full d_out, so replicated positions get identical gradients everywhere.
  backend_.embedding_backward(d_table, d_positions, d_out, tokens, seq_len, vocab_start_);
}

void VocabParallelCrossEntropy::forward_backward(Tensor losses, Tensor logits, Tensor targets, Tensor weights,
                                                 float d_scale, Tensor row_max, Tensor row_stats) const {
  const int64_t N = logits.dim(0);
  TS_ASSERT(row_stats.numel() == 2 * N && row_max.numel() == N, "cross-entropy scratch of the wrong size");
  // sum_exp and target_logit side by side, so one all-reduce sums both.
  Tensor stats = row_stats.view({2 * N});
  Tensor sum_exp(stats.f32(), DType::kF32, backend_.device(), {N});
  Tensor target_logit(stats.f32() + N, DType::kF32, backend_.device(), {N});
  backend_.cross_entropy_row_max(row_max, logits, valid_vocab_);
  all_reduce_tp(tp_, row_max, ReduceOp::kMax);
  backend_.cross_entropy_row_stats(sum_exp, target_logit, logits, row_max, targets, vocab_start_, valid_vocab_);
  all_reduce_tp(tp_, stats);
  backend_.cross_entropy_loss_backward(losses, logits, row_max, sum_exp, target_logit, targets, weights, vocab_start_,
                                       valid_vocab_, d_scale);
}

}  // namespace tessera

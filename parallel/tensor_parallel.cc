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

void all_gather_tp(ProcessGroup& tp, Tensor out, Tensor in) {
  trace::Span span(trace::Track::kTensorParallel, "tp", "tp all-gather");
  if (span.on()) span.arg("bytes", static_cast<int64_t>(out.bytes()));
  tp.all_gather(out, in)->wait();
}

void reduce_scatter_tp(ProcessGroup& tp, Tensor out, Tensor in) {
  trace::Span span(trace::Track::kTensorParallel, "tp", "tp reduce-scatter");
  if (span.on()) span.arg("bytes", static_cast<int64_t>(in.bytes()));
  tp.reduce_scatter(out, in, ReduceOp::kSum)->wait();
}

namespace {

// The [N, width] front of a scratch buffer for an [N/tp, width] chunk.
Tensor full_rows(Tensor buffer, const Tensor& chunk, int64_t width, int tp_size) {
  TS_ASSERT(buffer.defined(), "sequence-parallel layer called without its scratch buffers");
  return buffer.front({chunk.numel() / width * tp_size, width});
}

void check_sequence_parallel(const ProcessGroup& tp, bool sequence_parallel) {
  TS_ASSERT(!sequence_parallel || tp.size() > 1, "sequence parallelism over a tensor-parallel group of one");
}

}  // namespace

ColumnParallelLinear::ColumnParallelLinear(Backend& backend, ProcessGroup& tp, bool sequence_parallel)
    : backend_(backend), tp_(tp), sequence_parallel_(sequence_parallel) {
  check_sequence_parallel(tp, sequence_parallel);
}

Tensor ColumnParallelLinear::full_input(Tensor inp, const SequenceParallelScratch& scratch) const {
  if (!sequence_parallel_) return inp;
  const int64_t C = inp.dim(inp.ndim() - 1);
  const Tensor full = full_rows(scratch.gathered, inp, C, tp_.size());
  all_gather_tp(tp_, full, inp);
  return full;
}

void ColumnParallelLinear::forward(Tensor out, Tensor inp, Tensor weight, Tensor bias,
                                   const SequenceParallelScratch& scratch) const {
  backend_.matmul_forward(out, full_input(inp, scratch), weight, bias);
}

void ColumnParallelLinear::forward_gelu(Tensor out_gelu, Tensor pre_gelu, Tensor inp, Tensor weight, Tensor bias,
                                        const SequenceParallelScratch& scratch) const {
  backend_.matmul_gelu_forward(out_gelu, pre_gelu, full_input(inp, scratch), weight, bias);
}

void ColumnParallelLinear::backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp,
                                    Tensor weight, const SequenceParallelScratch& scratch) const {
  if (!sequence_parallel_) {
    backend_.matmul_backward(d_inp, d_weight, d_bias, d_out, inp, weight);
    all_reduce_tp(tp_, d_inp);
    return;
  }
  // dX = sum_r dY_r A_r: every rank's term for all N rows, then each rank keeps the sum of its own rows.
  const Tensor full = full_input(inp, scratch);
  const Tensor d_partial = full_rows(scratch.partial, d_inp, full.dim(1), tp_.size());
  backend_.matmul_backward(d_partial, d_weight, d_bias, d_out, full, weight);
  reduce_scatter_tp(tp_, d_inp, d_partial);
}

RowParallelLinear::RowParallelLinear(Backend& backend, ProcessGroup& tp, bool sequence_parallel)
    : backend_(backend), tp_(tp), sequence_parallel_(sequence_parallel) {
  check_sequence_parallel(tp, sequence_parallel);
}

void RowParallelLinear::forward(Tensor out, Tensor inp, Tensor weight, Tensor bias,
                                const SequenceParallelScratch& scratch) const {
  // Every rank adds its input features' share; the replicated bias is added once (TP rank 0).
  const Tensor rank_bias = tp_.rank() == 0 ? bias : Tensor();
  if (!sequence_parallel_) {
    backend_.matmul_forward(out, inp, weight, rank_bias);
    all_reduce_tp(tp_, out);
    return;
  }
  const Tensor partial = full_rows(scratch.partial, out, weight.dim(0), tp_.size());
  backend_.matmul_forward(partial, inp, weight, rank_bias);
  reduce_scatter_tp(tp_, out, partial);
}

void RowParallelLinear::backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp, Tensor weight,
                                 const SequenceParallelScratch& scratch) const {
  if (!sequence_parallel_) {
    backend_.matmul_backward(d_inp, d_weight, d_bias, d_out, inp, weight);
    return;
  }
  const Tensor full = full_rows(scratch.gathered, d_out, weight.dim(0), tp_.size());
  all_gather_tp(tp_, full, d_out);
  backend_.matmul_backward(d_inp, d_weight, d_bias, full, inp, weight);
}

VocabParallelEmbedding::VocabParallelEmbedding(Backend& backend, ProcessGroup& tp, int64_t vocab_start,
                                               bool sequence_parallel)
    : backend_(backend), tp_(tp), vocab_start_(vocab_start), sequence_parallel_(sequence_parallel) {
  check_sequence_parallel(tp, sequence_parallel);
}

void VocabParallelEmbedding::forward(Tensor out, Tensor tokens, Tensor table, Tensor positions, int seq_len,
                                     const SequenceParallelScratch& scratch) const {
  // Each TP rank looks up its vocabulary rows (zeros elsewhere), the position embedding is added once (on TP
  // rank 0), and the all-reduce completes every row on every rank (the reduce-scatter: every row of the chunk).
  const Tensor rank_positions = tp_.rank() == 0 ? positions : Tensor();
  if (!sequence_parallel_) {
    backend_.embedding_forward(out, tokens, table, rank_positions, seq_len, vocab_start_);
    all_reduce_tp(tp_, out);
    return;
  }
  const Tensor partial = full_rows(scratch.partial, out, table.dim(1), tp_.size());
  backend_.embedding_forward(partial, tokens, table, rank_positions, seq_len, vocab_start_);
  reduce_scatter_tp(tp_, out, partial);
}

void VocabParallelEmbedding::backward(Tensor d_table, Tensor d_positions, Tensor d_out, Tensor tokens, int seq_len,
                                      const SequenceParallelScratch& scratch) const {
  // Every TP rank holds the full d_out, so replicated positions get identical gradients everywhere.
  if (!sequence_parallel_) {
    backend_.embedding_backward(d_table, d_positions, d_out, tokens, seq_len, vocab_start_);
    return;
  }
  const int64_t C = d_out.dim(d_out.ndim() - 1);
  const Tensor full = full_rows(scratch.gathered, d_out, C, tp_.size());
  all_gather_tp(tp_, full, d_out);
  backend_.embedding_backward(d_table, d_positions, full, tokens, seq_len, vocab_start_);
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

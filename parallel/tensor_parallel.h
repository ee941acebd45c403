// Tensor-parallel layers (Megatron's): each owns its communication over the `tp` group, so that a model's
// forward and backward read as the single-rank network does. They hold no tensors: weights come from the
// model's flat parameter buffers and activations from its arena, passed per call. Every call is collective over
// tp (all ranks call it in the same order) when it communicates; with tp of size 1 nothing is communicated.
//
//   ColumnParallelLinear:  Y = X A^T + b,  A = [A_1; ...; A_tp] split by rows (output features); rank r computes
//                          Y_r = X A_r^T + b_r from the replicated X. Forward: no communication. Backward:
//                          dX = sum_r dY_r A_r, one all-reduce.
//   RowParallelLinear:     Y = X A^T + b,  A = [A_1 ... A_tp] split by columns (input features), X split
//                          likewise (the column-parallel layer's output); Y = sum_r X_r A_r^T, one all-reduce
//                          in the forward, the replicated bias added once (by rank 0). Backward: none.
//   VocabParallelEmbedding: x = E[token] with E split by rows over the padded vocabulary: each rank looks up its
//                          rows (zero elsewhere) and one all-reduce completes every row on every rank.
//   VocabParallelCrossEntropy: softmax cross-entropy over logits split by vocabulary columns, from row
//                          statistics combined across ranks (a max and a sum all-reduce); the logits are never
//                          gathered.
#pragma once

#include <cstdint>

#include "core/backend.h"
#include "parallel/process_group.h"

namespace tessera {

// Sums t over the group (in place); nothing for a group of one.
void all_reduce_tp(ProcessGroup& tp, Tensor t, ReduceOp op = ReduceOp::kSum);

class ColumnParallelLinear {
 public:
  ColumnParallelLinear(Backend& backend, ProcessGroup& tp) : backend_(backend), tp_(tp) {}
  // out[N, OC_local] = inp[N, C] weight[OC_local, C]^T (+ bias[OC_local]). Overwrites out.
  void forward(Tensor out, Tensor inp, Tensor weight, Tensor bias) const;
  // out_gelu = gelu(pre_gelu), pre_gelu = forward(...): the backend may fuse it.
  void forward_gelu(Tensor out_gelu, Tensor pre_gelu, Tensor inp, Tensor weight, Tensor bias) const;
  // d_inp[N, C] = all-reduce of d_out weight (overwrites); d_weight, d_bias accumulate (bias skipped if
  // undefined).
  void backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp, Tensor weight) const;

 private:
  Backend& backend_;
  ProcessGroup& tp_;
};

class RowParallelLinear {
 public:
  RowParallelLinear(Backend& backend, ProcessGroup& tp) : backend_(backend), tp_(tp) {}
  // out[N, OC] = all-reduce of inp[N, C_local] weight[OC, C_local]^T, plus the replicated bias (if defined)
  // once. Overwrites out.
  void forward(Tensor out, Tensor inp, Tensor weight, Tensor bias) const;
  // d_inp[N, C_local] = d_out weight (overwrites); d_weight and d_bias (the same on every rank) accumulate.
  void backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp, Tensor weight) const;

 private:
  Backend& backend_;
  ProcessGroup& tp_;
};

class VocabParallelEmbedding {
 public:
  // This rank holds vocabulary rows [vocab_start, vocab_start + rows of the table).
  VocabParallelEmbedding(Backend& backend, ProcessGroup& tp, int64_t vocab_start)
      : backend_(backend), tp_(tp), vocab_start_(vocab_start) {}
  // out[N, C] = table[tokens] (+ positions[i % seq_len] if defined, replicated, added once). Overwrites.
  void forward(Tensor out, Tensor tokens, Tensor table, Tensor positions, int seq_len) const;
  // d_table (this rank's rows) and d_positions (if defined) accumulate from the replicated d_out. No
  // communication: every rank holds the whole d_out.
  void backward(Tensor d_table, Tensor d_positions, Tensor d_out, Tensor tokens, int seq_len) const;

 private:
  Backend& backend_;
  ProcessGroup& tp_;
  int64_t vocab_start_;
};

class VocabParallelCrossEntropy {
 public:
  // This rank's logits hold vocabulary entries [vocab_start, vocab_start + columns); the first valid_vocab
  // are real, the rest padding (excluded from the softmax).
  VocabParallelCrossEntropy(Backend& backend, ProcessGroup& tp, int64_t vocab_start, int64_t valid_vocab)
      : backend_(backend), tp_(tp), vocab_start_(vocab_start), valid_vocab_(valid_vocab) {}
  // losses[N] = cross-entropy of each row against targets[N]; logits[N, V_local] is overwritten with
  // d_scale * d(sum_i weights[i] * losses[i])/d(logits), or with weights undefined d_scale * d(sum(losses))/d(logits).
  // Scratch: row_max[N] and row_stats[2, N] (f32).
  void forward_backward(Tensor losses, Tensor logits, Tensor targets, Tensor weights, float d_scale, Tensor row_max,
                        Tensor row_stats) const;

 private:
  Backend& backend_;
  ProcessGroup& tp_;
  int64_t vocab_start_, valid_vocab_;
};

}  // namespace tessera

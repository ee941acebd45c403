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
//
// Note [Sequence parallelism]
// Megatron's sequence parallelism (ModelConfig::sequence_parallel): the activations between a row-parallel layer
// and the next column-parallel one (norms, residual adds; activations [B, T, C] row-major = [N, C], N = B*T) are
// identical on every TP rank without it, so each rank keeps only its chunk: rank r holds tokens [r*N/tp,
// (r+1)*N/tp), [N/tp, C]. Norms and residual adds are per token, so any token partition is exact, and an
// all-gather of the chunks in rank order is exactly the [N, C] tensor. The layers, constructed with
// sequence_parallel true, then communicate as follows (scratch: SequenceParallelScratch, two [N, C] buffers):
//   ColumnParallelLinear: forward all-gathers the [N/tp, C] input into `gathered` and multiplies that;
//     backward re-gathers the input (the forward's gathered copy is not kept: a [N, C] tensor per layer and
//     micro-batch would undo most of the memory saved, and the gather is a copy, so the bits are the same),
//     writes the full dX partial sum into `partial` and reduce-scatters it into the [N/tp, C] d_inp: one
//     reduce-scatter instead of an all-reduce.
//   RowParallelLinear: forward writes the partial products (plus the replicated bias on TP rank 0, as without SP)
//     into `partial` and reduce-scatters them into the [N/tp, C] output instead of all-reducing; backward
//     all-gathers the [N/tp, C] d_out into `gathered` before its GEMMs. The bias enters before the reduction and
//     its gradient comes from the gathered (full) d_out, so it stays the same on every rank with no extra sum.
//   VocabParallelEmbedding: the lookup of all N tokens (plus the positions on TP rank 0) is reduce-scattered, so
//     the first block gets its chunk; backward all-gathers d_out, so the table's and the positions' gradients
//     are computed from every token, as without SP.
// The head is a column-parallel layer over the vocabulary: the final norm runs on the chunk and its output is
// gathered for the logits GEMM; the cross-entropy sees all N rows (vocabulary-split) as without SP.
// What stays split in the gradient: a norm's weight and bias (ParamSpec::sequence_parallel_grad) see only the
// rank's tokens, so their gradients are partial sums, summed over TP once per step by
// Model::reduce_sequence_parallel_grads before the data-parallel sync reads them. After that sum every TP rank
// holds the same complete gradient again, so the gradient norm still counts these replicated parameters on TP
// rank 0 only (LocalParam::counted).
// Numbers: every value is computed by the same arithmetic as without SP, except that a collective may add the
// ranks' partial sums in another order (exact for tp 2) and the norms' weight gradients are summed in two
// parts; the results agree within fp32 rounding. Pipeline stages exchange the [N/tp, C] chunks.
#pragma once

#include <cstdint>

#include "core/backend.h"
#include "parallel/process_group.h"

namespace tessera {

// Sums t over the group (in place); nothing for a group of one.
void all_reduce_tp(ProcessGroup& tp, Tensor t, ReduceOp op = ReduceOp::kSum);
// out = the ranks' `in` in rank order (out holds tp.size() times in's elements); a copy for a group of one.
void all_gather_tp(ProcessGroup& tp, Tensor out, Tensor in);
// out = rank's chunk of the sum over ranks of `in` (in holds tp.size() chunks of out's size).
void reduce_scatter_tp(ProcessGroup& tp, Tensor out, Tensor in);

// What the sequence-parallel layers gather into and reduce-scatter from (Note [Sequence parallelism]): two
// buffers of the compute dtype with room for [N, C] (N the micro-batch's B*T tokens, C the width of the
// split activations, n_embd), shared by every layer; their contents are dead between calls. Unused (and may be
// undefined) without sequence parallelism.
struct SequenceParallelScratch {
  Tensor gathered;  // a column-parallel layer's full input, a row-parallel layer's or the embedding's full d_out
  Tensor partial;   // partial sums before a reduce-scatter: row-parallel/embedding output, column-parallel d_inp
};

// With sequence_parallel (Note [Sequence parallelism]; needs tp of size > 1) the N-row tensors named "chunk"
// below hold this rank's N/tp rows instead; without it they hold all N rows and scratch is not used.
class ColumnParallelLinear {
 public:
  ColumnParallelLinear(Backend& backend, ProcessGroup& tp, bool sequence_parallel = false);
  // out[N, OC_local] = inp[N, C] weight[OC_local, C]^T (+ bias[OC_local]). Overwrites out. Sequence-parallel:
  // inp is the [N/tp, C] chunk, all-gathered into scratch.gathered first.
  void forward(Tensor out, Tensor inp, Tensor weight, Tensor bias, const SequenceParallelScratch& scratch = {}) const;
  // out_gelu = gelu(pre_gelu), pre_gelu = forward(...): the backend may fuse it.
  void forward_gelu(Tensor out_gelu, Tensor pre_gelu, Tensor inp, Tensor weight, Tensor bias,
                    const SequenceParallelScratch& scratch = {}) const;
  // d_inp[N, C] = all-reduce of d_out weight (overwrites); d_weight, d_bias accumulate (bias skipped if
  // undefined). Sequence-parallel: inp and d_inp are [N/tp, C] chunks; inp is re-gathered into
  // scratch.gathered and d_inp is this rank's chunk of the reduce-scatter of scratch.partial.
  void backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp, Tensor weight,
                const SequenceParallelScratch& scratch = {}) const;

 private:
  // inp, or with sequence parallelism its gather into scratch.gathered.
  Tensor full_input(Tensor inp, const SequenceParallelScratch& scratch) const;

  Backend& backend_;
  ProcessGroup& tp_;
  bool sequence_parallel_;
};

class RowParallelLinear {
 public:
  RowParallelLinear(Backend& backend, ProcessGroup& tp, bool sequence_parallel = false);
  // out[N, OC] = all-reduce of inp[N, C_local] weight[OC, C_local]^T, plus the replicated bias (if defined)
  // once. Overwrites out. Sequence-parallel: out is the [N/tp, OC] chunk of the reduce-scatter of the partial
  // products (written to scratch.partial) instead.
  void forward(Tensor out, Tensor inp, Tensor weight, Tensor bias, const SequenceParallelScratch& scratch = {}) const;
  // d_inp[N, C_local] = d_out weight (overwrites); d_weight and d_bias (the same on every rank) accumulate.
  // Sequence-parallel: d_out is the [N/tp, OC] chunk, all-gathered into scratch.gathered first.
  void backward(Tensor d_inp, Tensor d_weight, Tensor d_bias, Tensor d_out, Tensor inp, Tensor weight,
                const SequenceParallelScratch& scratch = {}) const;

 private:
  Backend& backend_;
  ProcessGroup& tp_;
  bool sequence_parallel_;
};

class VocabParallelEmbedding {
 public:
  // This rank holds vocabulary rows [vocab_start, vocab_start + rows of the table).
  VocabParallelEmbedding(Backend& backend, ProcessGroup& tp, int64_t vocab_start, bool sequence_parallel = false);
  // out[N, C] = table[tokens] (+ positions[i % seq_len] if defined, replicated, added once). Overwrites.
  // Sequence-parallel: out is the [N/tp, C] chunk (rows r*N/tp.. of the lookup of all N tokens, reduce-scattered
  // from scratch.partial).
  void forward(Tensor out, Tensor tokens, Tensor table, Tensor positions, int seq_len,
               const SequenceParallelScratch& scratch = {}) const;
  // d_table (this rank's rows) and d_positions (if defined) accumulate from the replicated d_out. No
  // communication: every rank holds the whole d_out. Sequence-parallel: d_out is the [N/tp, C] chunk, all-gathered
  // into scratch.gathered first, so both gradients are again complete and the same on every rank.
  void backward(Tensor d_table, Tensor d_positions, Tensor d_out, Tensor tokens, int seq_len,
                const SequenceParallelScratch& scratch = {}) const;

 private:
  Backend& backend_;
  ProcessGroup& tp_;
  int64_t vocab_start_;
  bool sequence_parallel_;
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

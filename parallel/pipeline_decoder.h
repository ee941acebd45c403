// PipelineDecoder: inference through the pipeline stages of a Model built for inference (ModelUse::kInference),
// next to the PipelineExecutor that trains. One call runs a few new tokens of each sequence through every stage
// in order — the first stage embeds them, each stage sends its output [B, n_new, C] to the next over the `pp`
// group — and the last stage's tensor-parallel ranks gather their vocabulary shards of the logits of each
// sequence's last new token into one row over the whole vocabulary (padding rows dropped), for sampling.
//
// Every method is collective over the model's tp group and over pp: all ranks call it in the same order with the
// same arguments. Synchronizes (the logits come back to the host).
#pragma once

#include <cstdint>
#include <vector>

#include "core/backend.h"
#include "parallel/model.h"
#include "parallel/process_group.h"

namespace tessera {

class PipelineDecoder {
 public:
  // model: this rank's stage, planned for inference; tp and pp: its groups. All must outlive the decoder.
  PipelineDecoder(Model& model, Backend& backend, ProcessGroup& tp, ProcessGroup& pp);

  // Runs tokens [B, n_new] (row-major, B = model.micro_batch(); read on the first stage only) at positions
  // [position, position + n_new) through every stage with the key/value caches (Model::decode). Returns on the
  // last stage the logits of each sequence's last new token over the vocabulary, [B, vocab_size] row-major f32;
  // elsewhere an empty vector.
  std::vector<float> decode(const std::vector<int32_t>& tokens, int position, int n_new);
  // The same numbers by full recomputation: tokens [B, model.seq_len()] through every stage's forward_logits (no
  // cache), returning the logits at position `last` of each sequence. Positions after `last` may hold anything
  // (attention is causal). For tests: what the cached decode must reproduce.
  std::vector<float> full_forward(const std::vector<int32_t>& tokens, int last);
  // tokens [B] on every stage become the last stage's (a broadcast over pp).
  void share_from_last_stage(std::vector<int32_t>& tokens);

 private:
  // On the last stage: row `row` of each sequence's rows_per_sequence rows of this TP rank's logits, gathered over
  // tp into [B, vocab_size].
  std::vector<float> gather_rows(const Tensor& logits, int64_t rows_per_sequence, int64_t row);

  Model& model_;
  Backend& backend_;
  ProcessGroup& tp_;
  ProcessGroup& pp_;
  int stage_, stages_;
  Buffer exchange_buffer_;
  Tensor local_rows_, gathered_rows_, shared_tokens_;  // [B, V_local], [tp, B, V_local] f32; [B] i32
};

}  // namespace tessera

// GPT-2's training arena plan from shapes alone (models/arena_plan.h): the same reservations, in the same
// dtypes, as Gpt2Model's constructor (gpt2_model.cc, "activations, planned once") makes for ModelUse::kTrain.
#include "models/gpt2/gpt2_model.h"

namespace tessera {

size_t gpt2_train_arena_bytes(const ModelConfig& config, const ArenaPlanShape& shape) {
  const DType A = config.dtype, F = DType::kF32, I = DType::kI32;
  const int64_t B = shape.micro_batch, T = shape.seq_len, BT = B * T, C = config.n_embd;
  const int64_t Cl = C / shape.tp, Hl = config.n_head / shape.tp;
  const int64_t vocab_rows = config.padded_vocab(shape.tp) / shape.tp;
  const bool head = shape.stage.has_head;
  // Blocks per slot: a slot serves every chunk of the stage (parallel/model.h), so it holds the largest chunk's.
  const int slot_layers = shape.stage.max_chunk_layers();
  // Rows of the norm and residual activations: a TP rank's chunk of the tokens with sequence parallelism.
  const bool sp = shape.sequence_parallel && shape.tp > 1;
  const int64_t R = sp ? BT / shape.tp : BT;

  // Note [Recomputation] (gpt2_model.cc): a recomputed block keeps per slot only what its recomputation reads;
  // the rest are the buffers every recomputed block of every slot shares, reserved once.
  const bool full = config.recompute == Recompute::kFull;
  auto recomputed = [&](int j) { return slot_layer_recomputed(config, shape.stage, j); };
  bool any_recomputed = false;
  for (int j = 0; j < slot_layers; ++j) any_recomputed |= recomputed(j);

  ArenaTally t;
  if (any_recomputed) {
    if (full) {
      t.add(A, R * C);        // ln1
      t.add(F, R, 2);         // ln1 mean, rstd
      t.add(A, BT * 3 * Cl);  // qkv
      t.add(A, R * C, 2);     // res2, ln2
      t.add(F, R, 2);         // ln2 mean, rstd
    }
    t.add(A, BT * Cl);         // attention output
    t.add(F, B * Hl * T);      // log-sum-exp
    t.add(A, BT * 4 * Cl, 2);  // fc, GELU(fc)
  }
  // A slot's j-th block's own tensors.
  auto block = [&](int j) {
    const bool r = recomputed(j);
    if (!(r && full)) {
      t.add(A, R * C);        // ln1
      t.add(F, R, 2);         // ln1 mean, rstd
      t.add(A, BT * 3 * Cl);  // qkv
      if (!r) {
        t.add(A, BT * Cl);     // attention output
        t.add(F, B * Hl * T);  // log-sum-exp
      }
      t.add(A, R * C, 2);                // res2, ln2
      t.add(F, R, 2);                    // ln2 mean, rstd
      if (!r) t.add(A, BT * 4 * Cl, 2);  // fc, GELU(fc)
    }
    t.add(A, R * C);  // res3
  };
  for (int s = 0; s < shape.slots; ++s) {
    t.add(I, BT, 2);  // tokens, targets
    t.add(A, R * C);  // stage input
    for (int j = 0; j < slot_layers; ++j) block(j);
    if (head) {
      t.add(A, R * C);  // lnf
      t.add(F, R, 2);   // lnf mean, rstd
      t.add(F, BT);     // losses
      t.add(A, R * C);  // d_lnf
    }
  }
  if (head) t.add(A, BT * vocab_rows);  // logits
  t.add(F, BT);                         // row max
  t.add(F, 2 * BT);                     // row statistics
  t.add(A, R * C, 2);                   // d_res, d_ln
  t.add(A, BT * 4 * Cl);                // d_big
  t.add(A, BT * Cl);                    // d_atty
  if (sp) t.add(A, BT * C, 2);          // the sequence-parallel layers' gathered and partial buffers
  if (head) t.add(F, BT, shape.slots);  // loss weights
  return t.bytes();
}

}  // namespace tessera

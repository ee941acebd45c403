// ModelConfig: the shape of a GPT model, independent of how it is split across ranks.
#pragma once

#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace tessera {

// Activation recomputation (proto Recompute, docs/memory.md): what a training model stores per micro-batch in
// flight and what its backward recomputes. Inference models ignore it.
enum class Recompute { kNone, kSelective, kFull };
inline const char* recompute_name(Recompute recompute) {
  return recompute == Recompute::kFull ? "FULL" : recompute == Recompute::kSelective ? "SELECTIVE" : "NONE";
}

// Where a training model keeps its parameters' gradients (Note [Gradient storage] in parallel/model.h): kFlat,
// one buffer for all of them; kLayerRing (ZeRO stage 2), a ring of one-layer buffers that the blocks share.
enum class GradientStorage { kFlat, kLayerRing };

struct ModelConfig {
  std::string arch = "gpt2";  // models/registry.h
  int vocab_size = 0;         // real tokens
  int n_layer = 0;
  int n_head = 0;
  int n_embd = 0;
  int max_seq_len = 0;  // rows of the position embedding
  float norm_eps = 1e-5f;
  float init_std = 0.02f;
  int vocab_pad_multiple = 1;
  // Storage of activations and of the parameters' compute copy: kF32, or kBF16 for mixed precision (core/backend.h,
  // Note [Precision]). Master weights, gradients and optimizer state are f32 either way.
  DType dtype = DType::kF32;
  int n_kv_head = 0;   // key/value heads (grouped-query attention); n_head for GPT-2
  int ffn_hidden = 0;  // MLP hidden size
  float rope_theta = 10000.0f;
  bool tie_embeddings = true;  // the output head is the token embedding
  // How the model trains, not its shape: activation recomputation, and with kFull the period of the recomputed
  // blocks (global block l is recomputed when l % recompute_every == 0). Never part of a checkpoint's identity.
  Recompute recompute = Recompute::kNone;
  int recompute_every = 1;
  // Gradient storage of a training model, also not part of a checkpoint's identity: with kLayerRing,
  // gradient_ring one-layer slots (>= 1), each padded to a multiple of gradient_ring_align elements (>= 1; the
  // data-parallel size, so that a reduce-scatter reads a slot in place).
  GradientStorage gradient_storage = GradientStorage::kFlat;
  int gradient_ring = 2;
  int gradient_ring_align = 1;
  // Sequence parallelism (proto parallel.sequence_parallel; Note [Sequence parallelism] in
  // parallel/tensor_parallel.h): a training model with tp > 1 runs its norms and residual stream on its
  // TP rank's contiguous 1/tp of the micro-batch's B*T tokens. Ignored with tp 1 and by inference models.
  bool sequence_parallel = false;

  // Whether global block `layer` recomputes its activations in the backward (kSelective: all blocks, in part).
  bool recomputes(int layer) const {
    return recompute == Recompute::kSelective || (recompute == Recompute::kFull && layer % recompute_every == 0);
  }

  int head_size() const { return n_embd / n_head; }
  // Rows of the embedding table when split over tp ranks: vocab_size rounded up to a multiple of
  // vocab_pad_multiple * tp. Rows past vocab_size are padding: zero, and excluded from the softmax.
  int padded_vocab(int tp) const {
    int multiple = vocab_pad_multiple * tp;
    return (vocab_size + multiple - 1) / multiple * multiple;
  }
};

}  // namespace tessera

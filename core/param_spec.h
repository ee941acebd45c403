// ParamSpec: the layout-independent description of every model parameter (DESIGN invariant 1).
//
// A rank's shard of a parameter is a slice of the global tensor, determined by the spec and the rank's
// tensor-parallel coordinate:
//   - replicated (tp_split_dim = -1): every TP rank holds the whole tensor;
//   - split along dim d into tp_split_parts equal parts, each part split evenly across tp ranks: rank r holds,
//     of every part p, rows [p*D/P + r*D/(P*tp), p*D/P + (r+1)*D/(P*tp)) of dimension d (D = global size, P =
//     parts). The fused QKV weight has P = 3, so each rank gets the Q, K and V rows of its own heads.
//   - the embedding (vocab_parallel) is split along dim 0 over the padded vocabulary; rows past vocab_size
//     exist only on the rank that holds them, as zero padding.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/model_config.h"

namespace tessera {

enum class InitKind : uint8_t { kNormal, kZeros, kOnes };

// Where a parameter sits in the network, which decides which pipeline stage holds it and when in backward its
// gradient is complete.
enum class ParamPlace : uint8_t {
  kInput,   // embeddings: the first stage; complete at the very end of backward
  kBlock,   // transformer block `layer`: its stage; complete right after that block's backward
  kOutput,  // final norm and output head: the last stage; complete before any block's backward
};

struct ParamSpec {
  std::string name;            // global name, as in the fixtures and checkpoints: "h.0.attn.qkv.weight"
  std::vector<int64_t> shape;  // global shape (unpadded)
  int tp_split_dim = -1;       // -1: replicated across TP
  int tp_split_parts = 1;
  bool vocab_parallel = false;  // split over the padded vocabulary (dim 0)
  int layer = -1;               // transformer block, or -1 for embeddings / final norm
  ParamPlace place = ParamPlace::kBlock;
  // An input-side parameter that the output head reuses (a tied embedding): the first and the last stage
  // each hold a copy, their gradients are summed, and checkpoints store the first stage's.
  bool tied_across_stages = false;
  // Elements [zero_grad_begin, zero_grad_end) of the flattened global tensor have an exactly zero gradient
  // (a key bias: softmax is unchanged when every score of a row moves by the same amount). Whatever AdamW
  // makes of their rounding noise is noise, which `tessera verify` leaves out of the update error.
  int64_t zero_grad_begin = 0, zero_grad_end = 0;
  // A replicated parameter applied to each token on its own in the region that sequence parallelism splits
  // over TP (a norm's weight and bias): under it each TP rank's gradient is a partial sum over its tokens, and
  // the model sums them over TP once per step (Model::reduce_sequence_parallel_grads). Layout-independent: it
  // describes the parameter, whether or not a job runs sequence-parallel.
  bool sequence_parallel_grad = false;
  bool weight_decay = false;  // decoupled weight decay applies (tensors with >= 2 dims)
  InitKind init = InitKind::kZeros;
  float init_std = 0;

  int64_t numel() const;
};

// Where a TP rank's shard of a parameter lives in the global tensor.
struct ShardLayout {
  std::vector<int64_t> local_shape;  // allocated shape (vocab-parallel: includes padding rows)
  // For each local index along the split dim, the global index, or -1 for padding.
  // Empty when replicated (local == global).
  std::vector<int64_t> global_index_of_local;
  int split_dim = -1;
};
ShardLayout shard_layout(const ParamSpec& spec, const ModelConfig& config, int tp_rank, int tp_size);
// shard_layout(...).local_shape without the index table (the same on every TP rank).
std::vector<int64_t> shard_local_shape(const ParamSpec& spec, const ModelConfig& config, int tp_size);

}  // namespace tessera

namespace tessera {

// Copies this shard's part of a whole global tensor (global, in spec.shape) into local (layout.local_shape);
// padding rows become zero.
void slice_global_to_local(const ParamSpec& spec, const ShardLayout& layout, const float* global, float* local);
// Writes this shard's part of the global tensor from local; other parts of global are left as they are.
void scatter_local_to_global(const ParamSpec& spec, const ShardLayout& layout, const float* local, float* global);

}  // namespace tessera

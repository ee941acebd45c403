// Arena plans without a model: the bytes a training Model's TensorArena (core/tensor_arena.h) reserves for one
// rank's stage, computed from the shapes alone, for the layout planner (launcher/run/planner.h), which must size
// a 175B-parameter model's shards without building them.
//
// Each architecture writes its formula next to its model (models/<arch>/<arch>_arena_plan.cc), reserving the
// same tensors in the same dtypes as its constructor does; tests/planner_test.cc builds real models in many
// layouts and holds the two equal, so a change to a model's plan that forgets its formula fails there.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/backend.h"
#include "core/model_config.h"
#include "parallel/model.h"

namespace tessera {

// One rank's stage as a Model would be built for training (stage.chunks for virtual stages). What is recomputed
// is not part of the shape: it is the ModelConfig's recompute and recompute_every (core/model_config.h,
// ModelConfig::recomputes), read by the formula exactly as the model's constructor reads them (Note
// [Recomputation] in models/gpt2/gpt2_model.cc).
struct ArenaPlanShape {
  int tp = 1;
  StageRange stage;
  int micro_batch = 1;
  int seq_len = 1;
  // Micro-batch chunks in flight (parallel/pipeline_schedule.h, pipeline_in_flight with the stage's chunk count).
  int slots = 1;
  // ModelConfig::sequence_parallel (with tp > 1): the norm and residual activations hold B*T/tp rows, and the
  // sequence-parallel layers add two [B*T, C] buffers (Note [Sequence parallelism] in parallel/tensor_parallel.h).
  bool sequence_parallel = false;
};

// Sums reservations the way TensorArena::reserve does: each tensor rounded up to 64 bytes.
class ArenaTally {
 public:
  void add(DType dtype, int64_t numel) { bytes_ += (static_cast<size_t>(numel) * dtype_size(dtype) + 63) / 64 * 64; }
  // n copies of one tensor.
  void add(DType dtype, int64_t numel, int64_t copies) {
    for (int64_t i = 0; i < copies; ++i) add(dtype, numel);
  }
  size_t bytes() const { return bytes_; }

 private:
  size_t bytes_ = 0;
};

}  // namespace tessera

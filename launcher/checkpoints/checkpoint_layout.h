// Checkpoint layout math, pure (no MPI, no files): which boxes of which global tensors a rank's state covers,
// which of them the rank stores, and which stored boxes it reads back when loading in any layout.
//
// Note [Checkpoint slices]. A rank's state is a list of StatePieces: a range [begin, end) of the local flat
// elements (row-major in ShardLayout::local_shape) of one LocalParam, of one kind (the weights or an AdamW
// moment), in memory the rank owns. Without ZeRO a piece is a whole local parameter. Under ZeRO-1 a DP rank
// holds the optimizer state of one contiguous range of the flat parameter buffer, which may cut a parameter
// anywhere, so a piece may start and end inside a row. local_blocks() turns a piece into boxes of the global
// tensor: the rows the piece covers (a partial first row, whole rows, a partial last row), each split where
// the TP map from local to global index along the split dimension jumps or reaches vocabulary padding
// (skipped). The fused QKV weight's TP shard is three boxes: its rows of Q, of K and of V. Each stored box is
// one dataset of the rank's shard file; loading intersects the boxes a rank needs with the stored ones.
//
// Exactly one replica of every element is stored (plan_state_pieces): model weights by DP rank 0, by TP rank 0
// for parameters replicated across TP (LocalParam::counted), and for the tied embedding by the first pipeline
// stage; optimizer state likewise, except that under ZeRO-1 every DP rank stores the range it owns.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/param_spec.h"
#include "core/tensor.h"
#include "parallel/model.h"
#include "parallel/optimizer.h"
#include "proto/checkpoint.pb.h"

namespace tessera {

enum class StateKind : uint8_t { kModel, kExpAvg, kExpAvgSq };
constexpr StateKind kStateKinds[] = {StateKind::kModel, StateKind::kExpAvg, StateKind::kExpAvgSq};

// The HDF5 group of a kind: "model", "optim/exp_avg", "optim/exp_avg_sq".
const char* state_kind_group(StateKind kind);
checkpoint::TensorKind to_proto(StateKind kind);
StateKind from_proto(checkpoint::TensorKind kind);

// A box of a tensor: indices [offset[d], offset[d] + count[d]) in every dimension d.
struct Box {
  std::vector<int64_t> offset, count;
  int64_t numel() const;
  bool operator==(const Box& other) const = default;
};
// The intersection of a and b (same rank); false if it is empty.
bool intersect(const Box& a, const Box& b, Box* out);

// A box of the global tensor and the local coordinates (in ShardLayout::local_shape) of its first element;
// the TP map is the identity shift inside a block, so the local extent equals global.count.
struct LocalBlock {
  Box global;
  std::vector<int64_t> local_offset;
};

// The blocks covering the local flat elements [begin, end) of a parameter shard, padding rows excluded, in
// local memory order (Note [Checkpoint slices]). Precondition: 0 <= begin <= end <= local numel, rank <= 2.
std::vector<LocalBlock> local_blocks(const ShardLayout& layout, int64_t begin, int64_t end);

// Where a box's elements (row-major) sit in a piece's memory: `rows` runs of `cols` consecutive elements, run
// i starting `start + i * stride` elements after the piece's first element. 1-d boxes are one run.
struct MemoryRuns {
  int64_t start = 0, stride = 0, rows = 1, cols = 0;
};
// The runs of the box of extent `count` whose first element is at local coordinates local_offset, in the
// memory of a piece that starts at local flat element piece_begin.
MemoryRuns memory_runs(const ShardLayout& layout, int64_t piece_begin, const std::vector<int64_t>& local_offset,
                       const std::vector<int64_t>& count);

// A rank's optimizer state (Optimizer::exp_avg/exp_avg_sq/state_ranges): the moments of flat parameter
// elements [flat_begin, flat_begin + size) of each range are elements [state_begin, state_begin + size) of the
// two buffers. Plain AdamW: one range over the whole flat buffer; ZeRO-1: the segments of the rank's shard.
struct OptimizerStateView {
  Tensor exp_avg, exp_avg_sq;
  std::vector<OptimizerStateRange> ranges;
};

// Which replicas a rank stores.
struct ReplicaRole {
  int dp_rank = 0;
  bool optimizer_sharded = false;    // ZeRO-1: every DP rank stores the optimizer state it owns
  bool first_pipeline_stage = true;  // holds the stored copy of a tied parameter (ParamSpec::tied_across_stages)
};

struct StatePiece {
  StateKind kind = StateKind::kModel;
  int param = 0;               // index into the LocalParam list
  int64_t begin = 0, end = 0;  // local flat elements of the parameter shard
  Tensor memory;               // the live state: end - begin f32 elements on the backend's device
  bool stored = false;         // this rank writes it to the checkpoint
};

// Every piece of a rank's state: each parameter's weights, and its moments where the optimizer holds them.
// The Tensors view the model's and the optimizer's own memory, so the plan is made once per run.
std::vector<StatePiece> plan_state_pieces(const std::vector<LocalParam>& params, const OptimizerStateView& optimizer,
                                          const ReplicaRole& role);

// "model/h.0.attn.qkv.weight[16,0]": the shard-file dataset of a box (its kind, global name and offset).
std::string slice_dataset_path(StateKind kind, const std::string& name, const Box& box);

// One dataset a rank writes: its manifest entry (name, kind, shape, box, dataset path) and where its data sit
// in the memory of piece `piece`.
struct SliceWrite {
  checkpoint::TensorSlice slice;
  int piece = 0;
  MemoryRuns runs;
};
// The datasets of the stored pieces, in piece order.
std::vector<SliceWrite> plan_slice_writes(const std::vector<LocalParam>& params, const std::vector<StatePiece>& pieces);

// One hyperslab read while loading: the box `within` (offsets relative to the dataset's first element) of a
// stored dataset, into the memory of piece `piece` at `runs`.
struct SliceRead {
  int shard = 0;   // index into manifest.shards()
  int tensor = 0;  // index into manifest.shards(shard).tensors(): the stored slice read from
  std::string dataset;
  Box within;
  int piece = 0;
  MemoryRuns runs;
};
// The reads that fill every piece (stored or not) from the manifest's slices. Throws CheckpointError naming
// the tensor when the checkpoint lacks a tensor, has another global shape for it, or does not cover every
// element of a piece. checkpoint_name labels messages.
std::vector<SliceRead> plan_slice_reads(const std::vector<LocalParam>& params, const std::vector<StatePiece>& pieces,
                                        const checkpoint::Manifest& manifest, const std::string& checkpoint_name);

// Problems with how the manifest's slices tile its tensors, one line each (empty when every (kind, name) is
// tiled exactly once: consistent global shapes, boxes inside them, no overlaps, no gaps).
std::vector<std::string> tiling_problems(const checkpoint::Manifest& manifest);

}  // namespace tessera

// Checkpoint layout math: blocks of pieces, replica ownership, write and read plans, tiling checks.
#include "launcher/checkpoints/checkpoint_layout.h"

#include <algorithm>

#include "core/check.h"

namespace tessera {

const char* state_kind_group(StateKind kind) {
  switch (kind) {
    case StateKind::kModel:
      return "model";
    case StateKind::kExpAvg:
      return "optim/exp_avg";
    case StateKind::kExpAvgSq:
      return "optim/exp_avg_sq";
  }
  return "?";
}

checkpoint::TensorKind to_proto(StateKind kind) {
  switch (kind) {
    case StateKind::kModel:
      return checkpoint::MODEL;
    case StateKind::kExpAvg:
      return checkpoint::EXP_AVG;
    case StateKind::kExpAvgSq:
      return checkpoint::EXP_AVG_SQ;
  }
  return checkpoint::MODEL;
}

StateKind from_proto(checkpoint::TensorKind kind) {
  switch (kind) {
    case checkpoint::MODEL:
      return StateKind::kModel;
    case checkpoint::EXP_AVG:
      return StateKind::kExpAvg;
    case checkpoint::EXP_AVG_SQ:
      return StateKind::kExpAvgSq;
  }
  return StateKind::kModel;
}

int64_t Box::numel() const {
  int64_t n = 1;
  for (int64_t c : count) n *= c;
  return n;
}

bool intersect(const Box& a, const Box& b, Box* out) {
  TS_ASSERT(a.offset.size() == b.offset.size(), "boxes of different rank");
  out->offset.resize(a.offset.size());
  out->count.resize(a.offset.size());
  for (size_t d = 0; d < a.offset.size(); ++d) {
    const int64_t lo = std::max(a.offset[d], b.offset[d]);
    const int64_t hi = std::min(a.offset[d] + a.count[d], b.offset[d] + b.count[d]);
    if (hi <= lo) return false;
    out->offset[d] = lo;
    out->count[d] = hi - lo;
  }
  return true;
}

namespace {

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// A rectangle of local (row, column) indices in the 2-d view [rows, cols] of a shard (1-d shards: one row).
struct Rect {
  int64_t row_begin, row_end, col_begin, col_end;
};

// The rectangles of the flat range [begin, end) of a [rows, cols] view: a partial first row, whole rows, a
// partial last row.
std::vector<Rect> flat_range_rects(int64_t cols, int64_t begin, int64_t end) {
  std::vector<Rect> rects;
  if (begin >= end) return rects;
  int64_t r0 = begin / cols, c0 = begin % cols;
  const int64_t r1 = end / cols, c1 = end % cols;
  if (r0 == r1) {
    rects.push_back({r0, r0 + 1, c0, c1});
    return rects;
  }
  if (c0 != 0) {
    rects.push_back({r0, r0 + 1, c0, cols});
    ++r0;
  }
  if (r1 > r0) rects.push_back({r0, r1, 0, cols});
  if (c1 != 0) rects.push_back({r1, r1 + 1, 0, c1});
  return rects;
}

// Maximal runs [first, last) of local indices in [begin, end) whose global indices are consecutive and not
// padding, as (local first, global first, length).
struct Run {
  int64_t local, global, length;
};
std::vector<Run> index_runs(const std::vector<int64_t>* global_of_local, int64_t begin, int64_t end) {
  std::vector<Run> runs;
  if (global_of_local == nullptr) {
    if (begin < end) runs.push_back({begin, begin, end - begin});
    return runs;
  }
  for (int64_t i = begin; i < end;) {
    const int64_t g = (*global_of_local)[i];
    if (g < 0) {
      ++i;
      continue;
    }
    int64_t n = 1;
    while (i + n < end && (*global_of_local)[i + n] == g + n) ++n;
    runs.push_back({i, g, n});
    i += n;
  }
  return runs;
}

bool is_tied_embedding(const ParamSpec& spec) { return spec.tied_across_stages; }

std::string join(const std::vector<int64_t>& values, const char* separator = ",") {
  std::string out;
  for (size_t i = 0; i < values.size(); ++i) out += (i ? separator : "") + std::to_string(values[i]);
  return out;
}

std::string box_string(const Box& box) {
  std::string out = "[";
  for (size_t d = 0; d < box.offset.size(); ++d) {
    out += (d ? ", " : "") + std::to_string(box.offset[d]) + ":" + std::to_string(box.offset[d] + box.count[d]);
  }
  return out + "]";
}

Box slice_box(const checkpoint::TensorSlice& slice) {
  return Box{{slice.offset().begin(), slice.offset().end()}, {slice.count().begin(), slice.count().end()}};
}

std::vector<int64_t> slice_shape(const checkpoint::TensorSlice& slice) {
  return {slice.global_shape().begin(), slice.global_shape().end()};
}

std::string shape_string(const std::vector<int64_t>& shape) { return "[" + join(shape, ", ") + "]"; }

}  // namespace

std::vector<LocalBlock> local_blocks(const ShardLayout& layout, int64_t begin, int64_t end) {
  const std::vector<int64_t>& shape = layout.local_shape;
  TS_ASSERT(shape.size() == 1 || shape.size() == 2, "checkpoint slices of ", shape.size(), "-d tensors");
  TS_ASSERT(0 <= begin && begin <= end && end <= product(shape), "piece [", begin, ", ", end, ") of ", product(shape),
            " elements");
  const bool matrix = shape.size() == 2;
  const int64_t cols = matrix ? shape[1] : shape[0];
  // The split dimension in the [rows, cols] view: a 1-d shard's only dimension is the view's columns.
  const int view_split = layout.split_dim < 0 ? -1 : (matrix ? layout.split_dim : 1);
  const std::vector<int64_t>* map = layout.split_dim < 0 ? nullptr : &layout.global_index_of_local;

  std::vector<LocalBlock> blocks;
  for (const Rect& rect : flat_range_rects(cols, begin, end)) {
    const std::vector<Run> row_runs = index_runs(view_split == 0 ? map : nullptr, rect.row_begin, rect.row_end);
    const std::vector<Run> col_runs = index_runs(view_split == 1 ? map : nullptr, rect.col_begin, rect.col_end);
    for (const Run& rows : row_runs) {
      for (const Run& columns : col_runs) {
        LocalBlock block;
        if (matrix) {
          block.global = Box{{rows.global, columns.global}, {rows.length, columns.length}};
          block.local_offset = {rows.local, columns.local};
        } else {
          block.global = Box{{columns.global}, {columns.length}};
          block.local_offset = {columns.local};
        }
        blocks.push_back(std::move(block));
      }
    }
  }
  return blocks;
}

MemoryRuns memory_runs(const ShardLayout& layout, int64_t piece_begin, const std::vector<int64_t>& local_offset,
                       const std::vector<int64_t>& count) {
  MemoryRuns runs;
  if (layout.local_shape.size() == 1) {
    runs.start = local_offset[0] - piece_begin;
    runs.stride = count[0];
    runs.rows = 1;
    runs.cols = count[0];
  } else {
    const int64_t cols = layout.local_shape[1];
    runs.start = local_offset[0] * cols + local_offset[1] - piece_begin;
    runs.stride = cols;
    runs.rows = count[0];
    runs.cols = count[1];
  }
  TS_ASSERT(runs.start >= 0, "block before its piece");
  return runs;
}

std::vector<StatePiece> plan_state_pieces(const std::vector<LocalParam>& params, const OptimizerStateView& optimizer,
                                          const ReplicaRole& role) {
  std::vector<StatePiece> pieces;
  // One stored replica per element (Note [Checkpoint slices]): TP rank 0 for replicated parameters, the
  // first pipeline stage for the tied embedding.
  auto stored_copy = [&](const LocalParam& p) {
    return p.counted && (role.first_pipeline_stage || !is_tied_embedding(p.spec));
  };
  for (int i = 0; i < static_cast<int>(params.size()); ++i) {
    const LocalParam& p = params[i];
    const int64_t n = p.value.numel();
    StatePiece piece;
    piece.kind = StateKind::kModel;
    piece.param = i;
    piece.begin = 0;
    piece.end = n;
    piece.memory = Tensor(p.value.f32(), DType::kF32, p.value.device(), {n});
    piece.stored = role.dp_rank == 0 && stored_copy(p);
    pieces.push_back(piece);
  }
  for (StateKind kind : {StateKind::kExpAvg, StateKind::kExpAvgSq}) {
    const Tensor& moments = kind == StateKind::kExpAvg ? optimizer.exp_avg : optimizer.exp_avg_sq;
    if (!moments.defined()) continue;
    for (const OptimizerStateRange& range : optimizer.ranges) {
      TS_ASSERT(range.state_begin >= 0 && range.state_begin + range.size <= moments.numel(), "optimizer state range [",
                range.state_begin, ", ", range.state_begin + range.size, ") of ", moments.numel(), " elements");
      for (int i = 0; i < static_cast<int>(params.size()); ++i) {
        const LocalParam& p = params[i];
        const int64_t lo = std::max(p.offset, range.flat_begin);
        const int64_t hi = std::min(p.offset + p.value.numel(), range.flat_begin + range.size);
        if (lo >= hi) continue;
        StatePiece piece;
        piece.kind = kind;
        piece.param = i;
        piece.begin = lo - p.offset;
        piece.end = hi - p.offset;
        piece.memory = Tensor(moments.f32() + range.state_begin + (lo - range.flat_begin), DType::kF32,
                              moments.device(), {hi - lo});
        piece.stored = (role.optimizer_sharded || role.dp_rank == 0) && stored_copy(p);
        pieces.push_back(piece);
      }
    }
  }
  return pieces;
}

std::string slice_dataset_path(StateKind kind, const std::string& name, const Box& box) {
  return std::string(state_kind_group(kind)) + "/" + name + "[" + join(box.offset) + "]";
}

std::vector<SliceWrite> plan_slice_writes(const std::vector<LocalParam>& params,
                                          const std::vector<StatePiece>& pieces) {
  std::vector<SliceWrite> writes;
  for (int k = 0; k < static_cast<int>(pieces.size()); ++k) {
    const StatePiece& piece = pieces[k];
    if (!piece.stored) continue;
    const LocalParam& p = params[piece.param];
    for (const LocalBlock& block : local_blocks(p.layout, piece.begin, piece.end)) {
      SliceWrite write;
      checkpoint::TensorSlice& slice = write.slice;
      slice.set_name(p.spec.name);
      slice.set_kind(to_proto(piece.kind));
      for (int64_t d : p.spec.shape) slice.add_global_shape(d);
      for (int64_t o : block.global.offset) slice.add_offset(o);
      for (int64_t c : block.global.count) slice.add_count(c);
      slice.set_dataset(slice_dataset_path(piece.kind, p.spec.name, block.global));
      write.piece = k;
      write.runs = memory_runs(p.layout, piece.begin, block.local_offset, block.global.count);
      writes.push_back(std::move(write));
    }
  }
  return writes;
}

std::vector<SliceRead> plan_slice_reads(const std::vector<LocalParam>& params, const std::vector<StatePiece>& pieces,
                                        const checkpoint::Manifest& manifest, const std::string& checkpoint_name) {
  // Every stored slice by (kind, name).
  struct Stored {
    int shard, tensor;
    const checkpoint::TensorSlice* slice;
  };
  std::map<std::pair<int, std::string>, std::vector<Stored>> stored;
  for (int s = 0; s < manifest.shards_size(); ++s) {
    for (int t = 0; t < manifest.shards(s).tensors_size(); ++t) {
      const checkpoint::TensorSlice& slice = manifest.shards(s).tensors(t);
      stored[{static_cast<int>(slice.kind()), slice.name()}].push_back({s, t, &slice});
    }
  }
  std::vector<SliceRead> reads;
  for (int k = 0; k < static_cast<int>(pieces.size()); ++k) {
    const StatePiece& piece = pieces[k];
    const LocalParam& p = params[piece.param];
    const std::string path = std::string(state_kind_group(piece.kind)) + "/" + p.spec.name;
    auto found = stored.find({static_cast<int>(to_proto(piece.kind)), p.spec.name});
    TS_CHECK(found != stored.end(), CheckpointError, checkpoint_name, " has no tensor ", path,
             ": it was saved from a different model (resume with the model it was saved from)");
    const std::vector<int64_t> shape = slice_shape(*found->second.front().slice);
    TS_CHECK(shape == p.spec.shape, CheckpointError, checkpoint_name, ": tensor ", path, " has global shape ",
             shape_string(shape), ", the model expects ", shape_string(p.spec.shape));
    int64_t needed = 0, covered = 0;
    for (const LocalBlock& block : local_blocks(p.layout, piece.begin, piece.end)) {
      needed += block.global.numel();
      for (const auto& [shard, tensor, slice] : found->second) {
        const Box box = slice_box(*slice);
        Box overlap;
        if (!intersect(block.global, box, &overlap)) continue;
        SliceRead read;
        read.shard = shard;
        read.tensor = tensor;
        read.dataset = slice->dataset();
        read.within.count = overlap.count;
        std::vector<int64_t> local = block.local_offset;
        for (size_t d = 0; d < overlap.offset.size(); ++d) {
          read.within.offset.push_back(overlap.offset[d] - box.offset[d]);
          local[d] += overlap.offset[d] - block.global.offset[d];
        }
        read.piece = k;
        read.runs = memory_runs(p.layout, piece.begin, local, overlap.count);
        reads.push_back(std::move(read));
        covered += overlap.numel();
      }
    }
    TS_CHECK(covered == needed, CheckpointError, checkpoint_name, ": the stored slices of ", path, " cover ", covered,
             " of the ", needed, " elements this rank needs; the checkpoint is incomplete");
  }
  return reads;
}

std::vector<std::string> tiling_problems(const checkpoint::Manifest& manifest) {
  struct Stored {
    int shard;
    Box box;
  };
  std::map<std::pair<int, std::string>, std::vector<Stored>> tensors;
  std::map<std::pair<int, std::string>, std::vector<int64_t>> shapes;
  std::vector<std::string> problems;
  auto label = [](const std::pair<int, std::string>& key) {
    return std::string(state_kind_group(from_proto(static_cast<checkpoint::TensorKind>(key.first)))) + "/" + key.second;
  };
  auto shard_name = [&](int s) { return manifest.shards(s).file().file(); };
  for (int s = 0; s < manifest.shards_size(); ++s) {
    for (const checkpoint::TensorSlice& slice : manifest.shards(s).tensors()) {
      const std::pair<int, std::string> key{static_cast<int>(slice.kind()), slice.name()};
      const std::vector<int64_t> shape = slice_shape(slice);
      const Box box = slice_box(slice);
      auto [it, inserted] = shapes.emplace(key, shape);
      if (!inserted && it->second != shape) {
        problems.push_back(label(key) + ": " + shard_name(s) + " gives global shape " + shape_string(shape) +
                           ", another shard " + shape_string(it->second));
        continue;
      }
      bool inside = box.offset.size() == shape.size() && box.count.size() == shape.size();
      for (size_t d = 0; inside && d < shape.size(); ++d) {
        inside = box.offset[d] >= 0 && box.count[d] > 0 && box.offset[d] + box.count[d] <= shape[d];
      }
      if (!inside) {
        problems.push_back(label(key) + ": slice " + box_string(box) + " in " + shard_name(s) +
                           " is not inside the global shape " + shape_string(shape));
        continue;
      }
      tensors[key].push_back({s, box});
    }
  }
  for (const auto& [key, slices] : tensors) {
    int64_t total = 0;
    bool overlapping = false;
    for (size_t i = 0; i < slices.size() && !overlapping; ++i) {
      total += slices[i].box.numel();
      for (size_t j = i + 1; j < slices.size(); ++j) {
        Box overlap;
        if (intersect(slices[i].box, slices[j].box, &overlap)) {
          problems.push_back(label(key) + ": slices " + box_string(slices[i].box) + " in " +
                             shard_name(slices[i].shard) + " and " + box_string(slices[j].box) + " in " +
                             shard_name(slices[j].shard) + " overlap");
          overlapping = true;
          break;
        }
      }
    }
    const int64_t numel = product(shapes.at(key));
    if (!overlapping && total != numel) {
      problems.push_back(label(key) + ": the slices hold " + std::to_string(total) + " of the tensor's " +
                         std::to_string(numel) + " elements (a shard is missing from the manifest)");
    }
  }
  // Every kind must be present for every parameter that has weights.
  for (const auto& [key, shape] : shapes) {
    if (key.first != checkpoint::MODEL) continue;
    for (int kind : {checkpoint::EXP_AVG, checkpoint::EXP_AVG_SQ}) {
      if (shapes.count({kind, key.second}) == 0) {
        problems.push_back(label({kind, key.second}) + " is missing (the weights are there)");
      }
    }
  }
  return problems;
}

}  // namespace tessera

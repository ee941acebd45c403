// The HDF5 files of a checkpoint: one shard file per writing rank, holding float32 datasets that are boxes of
// global tensors (Note [Checkpoint slices] in checkpoint_layout.h), and model.h5, whose virtual datasets
// present every global tensor whole by mapping onto the shard files.
//
// Thread-safety: this HDF5 build is not thread-safe. Any thread may call these functions, but no two HDF5
// calls may run at once in the process (the async checkpoint writer is the only HDF5 user while it runs).
// None of them calls MPI. Errors are CheckpointError naming the file and saying what to do; HDF5's own error
// stack is never printed.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "launcher/checkpoints/checkpoint_layout.h"
#include "launcher/common/hdf5_file.h"
#include "proto/checkpoint.pb.h"

namespace tessera {

// Root attribute "format" of shard files and of model.h5.
inline constexpr char kShardFormat[] = "tessera-checkpoint-shard-v1";
inline constexpr char kVirtualFormat[] = "tessera-checkpoint-v1";

// One dataset to write: its manifest entry and its data, `runs` of host memory starting at `host`.
struct ShardWriteItem {
  checkpoint::TensorSlice slice;
  const float* host = nullptr;
  MemoryRuns runs;
};

// Creates the shard file at path (replacing any file there) with one dataset per item, each with attributes
// global_name, kind, global_shape and offset; closes it, fsyncs it and hashes it. Returns its manifest
// entry: file = file_name, size, XXH64, and the items' slices (rank fields unset). after_item, if set, is called
// after each dataset is written with the items and bytes of data written so far (for progress).
checkpoint::Shard write_shard_file(const std::string& path, const std::string& file_name,
                                   const std::vector<ShardWriteItem>& items, int64_t step,
                                   const std::function<void(int64_t items, int64_t bytes)>& after_item = nullptr);

// Reads boxes of the datasets of one shard file.
class ShardReader {
 public:
  // Opens path read-only. Throws CheckpointError if it is missing or not HDF5.
  explicit ShardReader(const std::string& path);

  // Reads the box `within` of the dataset that holds `slice` (a manifest entry of this shard) into host memory
  // at `runs` (host holds host_count floats). The dataset's shape and its attributes global_name, kind,
  // global_shape and offset must be the slice's: a file that disagrees with its manifest is never read from.
  // Throws CheckpointError naming the file and dataset.
  void read(const checkpoint::TensorSlice& slice, const Box& within, float* host, int64_t host_count,
            const MemoryRuns& runs);

 private:
  std::string path_;
  H5Handle file_;
};

// Writes model.h5 at path: for every (kind, name) of the manifest's slices a virtual dataset
// <state_kind_group>/<name> of the global shape, each slice mapped to its dataset in its shard file (named
// relative to model.h5's directory). Not fsynced.
void write_virtual_file(const std::string& path, const checkpoint::Manifest& manifest);

// The innermost message of HDF5's current error stack ("unable to open file: ... No such file or
// directory"), or "" if the stack is empty; for error messages.
std::string hdf5_error_detail();

}  // namespace tessera

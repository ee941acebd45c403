// Checkpointer: saves a training run's state — the model's weights, AdamW's moments and step count, the data
// position — as a sharded HDF5 checkpoint, and resumes from one in any layout (DESIGN invariant 4;
// docs/checkpoints.md has the format).
//
// Saving. Every rank that stores something (Note [Checkpoint slices]) writes its own shard file, in parallel,
// into RUN_DIR/checkpoints/step_NNNNNNNN.tmp-<run token>/ and fsyncs it. The ranks then all-gather the small
// per-shard metadata (tensor lists, sizes, checksums) over the world group, a timed collective that doubles as
// the barrier; world rank 0 writes model.h5 and the manifest, fsyncs them, renames the directory to
// step_NNNNNNNN and only then points `latest` at it. A crash at any moment leaves the previous checkpoint as
// `latest`, intact.
//
// Note [Async checkpoints]. MPI runs FUNNELED: only the main thread may call it. With checkpoint.async the
// main thread copies the stored state into a preallocated host staging buffer and hands the shard write to a
// background thread (HDF5 and file I/O only, no MPI), then training continues. Between steps, after_step()
// all-reduces "my writer is still busy" together with the stop flag; once no rank is busy, the main threads
// publish (gather + rank 0's manifest) as in a synchronous save. The next save, or finish(), waits for a
// writer that is still busy. The main thread makes no HDF5 call while a writer runs (HDF5 is not
// thread-safe here), and HDF5 is initialized on the main thread (a parallel HDF5 build calls MPI then).
//
// Every method is collective over the job's world group unless it says otherwise: all ranks call it in the
// same order with the same arguments. Main thread only.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "launcher/checkpoints/checkpoint_layout.h"
#include "launcher/checkpoints/checkpoint_manifest.h"
#include "launcher/checkpoints/checkpoint_shard.h"
#include "launcher/data/data_sources.h"
#include "launcher/run/job.h"
#include "proto/checkpoint.pb.h"

namespace tessera {

// Where a save may be made to crash (SIGKILL of world rank 0), to test that an interrupted save never damages
// the previous checkpoint: after the shards are written, after the manifest, after the rename to step_N
// (before `latest` moves).
enum class SaveCrashPoint { kNone, kAfterShards, kAfterManifest, kAfterRename };

// World rank 0's part of publishing a checkpoint whose shards are in tmp_dir: writes model.h5 and the manifest
// (the shards' entries must be filled in), fsyncs them and the directory, renames tmp_dir to
// checkpoints_dir/step_dir_name(step) (an older directory of that name is replaced) and points `latest` at it.
// Returns the final directory. Not collective; no MPI.
std::string publish_checkpoint(const std::string& tmp_dir, const std::string& checkpoints_dir,
                               checkpoint::Manifest& manifest, SaveCrashPoint crash = SaveCrashPoint::kNone);

// The data identity recorded in a manifest: dataset prefix and size, tokenizer path and its file's XXH64.
checkpoint::DataIdentity data_identity(const config::JobConfig& job, const DataSources& data);
checkpoint::ModelShape model_shape(const config::ModelConfig& model);

// Inference (tessera generate): the checkpoint `spec` names (a checkpoint, checkpoints or run directory; a run
// directory means its latest usable checkpoint), chosen as Checkpointer::resume chooses — `latest`, falling back
// past incomplete or damaged ones, every shard's checksum verified by one rank — and its manifest. `what` starts
// messages ("--checkpoint"); rank 0 warns when log. Collective over world. Throws ConfigError when spec names no
// checkpoint, CheckpointError when none is usable.
CheckpointChoice choose_checkpoint_for_inference(const std::string& spec, ProcessGroup& world, bool log,
                                                 const std::string& what);
// Loads the model weights of checkpoint `dir` into this rank's shard of `model` (any layout: only the stored boxes
// overlapping its slices are read) and refreshes the compute copies. No optimizer state. Not collective.
void load_model_weights(const std::string& dir, const checkpoint::Manifest& manifest, Model& model, Backend& backend);

class Checkpointer {
 public:
  // job and data must outlive the checkpointer; run_dir is the run's directory (checkpoints go to its
  // checkpoints/). Collective: agrees on a token naming this run's temporary directories. With
  // checkpoint.async, allocates the host staging buffer now.
  Checkpointer(Job& job, const DataSources& data, std::string run_dir);
  // Waits for a background write that is still running (it is not published: that needs the other ranks)
  // and for the deletion of old checkpoints.
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Loads the checkpoint `spec` names (see resume_candidates: "latest", a checkpoint, checkpoints or run
  // directory) into the model and optimizer, reading on each rank only the stored boxes that overlap its own
  // slices; returns the step to continue from. Every shard's checksum is verified first, each by one rank.
  // When the checkpoint `latest` names (or the newest) is incomplete or damaged, falls back to the next newest
  // complete one and says so on rank 0. "latest" with no checkpoint at all returns 0 (a fresh start).
  // Throws ConfigError when the checkpoint's model shape, tokenizer, train.global_batch or train.seq_len differ
  // from the job's (naming each difference), CheckpointError when nothing usable is found (naming every
  // damaged file).
  int64_t resume(const std::string& spec);
  // Whether resume() loaded a checkpoint (false: there was none yet, a fresh start).
  bool resumed() const { return resumed_; }
  // Loads only the model weights of the checkpoint `spec` names (a checkpoint, checkpoints or run directory;
  // the newest complete one, as for resume), in any layout; the optimizer state and the step are left as
  // they are (a new run: zero moments, step 0). The model's shape and tokenizer must match; the data, batch,
  // sequence length and seed may differ. `flag` names the option in messages ("--init-from"). Returns the
  // checkpoint directory loaded. Collective.
  std::string load_weights(const std::string& spec, const char* flag);

  // Between steps, with the number of optimizer steps completed (`last`: the run's final step). Agrees with
  // the other ranks on stop signals (a SIGTERM/SIGINT/SIGUSR1 on any rank stops all), publishes a background save
  // that has finished everywhere, and saves when checkpoint.every_steps says so, at the last step, or when
  // stopping (the latter two if checkpoint.save_on_exit). Returns true when the run must stop.
  bool after_step(int64_t completed_steps, bool last);

  // Saves the state after `step` completed steps (synchronously, or started in the background with async).
  void save(int64_t step);

  // Waits for a background save and publishes it, and for the deletion of old checkpoints. Call before
  // leaving the training loop.
  void finish();

  // The signal that stopped the run, 0 if none.
  int stop_signal() const { return stop_signal_; }

  // Test hook: world rank 0 kills itself with SIGKILL at `point` of the save of `step`.
  void crash_during_save(int64_t step, SaveCrashPoint point);
  // Test hook: world rank `world_rank` fails to write its shard of `step` (as a full disk would).
  void fail_shard_write(int64_t step, int world_rank) {
    fail_shard_step_ = step;
    fail_shard_rank_ = world_rank;
  }

 private:
  struct Pending {
    int64_t step = -1;
    int64_t optimizer_steps = 0;  // at the time of the save
    std::string tmp_dir;
    double started_s = 0;  // monotonic seconds
    double copy_s = 0;     // copying the state to the staging buffer (the training loop waits)
    double write_s = 0;    // writing the shard in the training loop (synchronous saves)
    std::thread writer;
    std::atomic<bool> done{false};
    std::string shard;  // the serialized checkpoint::Shard, or the error
    bool failed = false;
    bool has_shard = false;
  };

  // Writes this rank's shard of `step` into pending_.
  void write_shard(Pending& pending, const std::vector<const float*>& host);
  // Waits for the writer (if any), then gathers every rank's shard and publishes (collective).
  void publish(Pending& pending);
  std::vector<std::string> verify(const std::string& dir, checkpoint::Manifest* manifest);
  // The newest usable checkpoint `spec` names, agreed on by every rank, its shards verified (an empty dir when
  // `spec` is "latest" and there is no checkpoint yet). Collective.
  CheckpointChoice choose(const std::string& spec, const char* flag);
  // weights_only: only the model's shape and the tokenizer must match (a new run from these weights).
  void check_compatible(const std::string& dir, const checkpoint::Manifest& manifest, bool weights_only) const;
  void load(const std::string& dir, const checkpoint::Manifest& manifest, bool weights_only);

  Job& job_;
  const DataSources& data_;
  std::string run_dir_, checkpoints_dir_;
  config::CheckpointConfig options_;
  std::string token_;
  GridCoord coord_;
  std::vector<StatePiece> pieces_;
  std::vector<SliceWrite> writes_;
  // Host staging (async, or a device that is not the CPU): the stored pieces back to back.
  std::unique_ptr<float[]> staging_;
  std::vector<int64_t> staging_offset_;  // per piece, -1 if not stored
  int64_t staging_size_ = 0;
  std::unique_ptr<Pending> pending_;
  // World rank 0 deletes old checkpoints in the background (file system only: no HDF5, no MPI), so that
  // unlinking gigabytes does not stall training; joined before the next deletion and in finish().
  std::thread cleaner_;
  int64_t last_saved_step_ = -1;
  bool resumed_ = false;
  int stop_signal_ = 0;
  int64_t crash_step_ = -1;
  int64_t fail_shard_step_ = -1;
  int fail_shard_rank_ = -1;
  SaveCrashPoint crash_point_ = SaveCrashPoint::kNone;
};

}  // namespace tessera

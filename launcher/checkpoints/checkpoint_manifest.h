// A checkpoint directory on disk, without MPI: names, the manifest, integrity checks, the `latest` pointer,
// finding checkpoints, and deleting old ones. Used by the training run's Checkpointer (on each rank or on
// rank 0, as it says), `tessera inspect` and `tessera import`.
//
//   RUN_DIR/checkpoints/
//     latest                     text: the directory name of the newest published checkpoint ("step_00000200")
//                                and, on a second line, its XXH64 ("xxh64 0123456789abcdef")
//     step_00000200/             one checkpoint; a directory appears under this name only when complete
//       manifest.pb              checkpoint::Manifest, binary (what Tessera reads)
//       manifest.textproto       the same, in text format (for humans)
//       model.h5                 virtual datasets: every global tensor whole
//       shard_<world rank>.h5    the slices one rank stored
//     step_00000300.tmp-1a2b3c/  a save in progress (or interrupted): never read
//
// Errors are CheckpointError naming the path and saying what to do.
//
// Note [Manifest envelope]. Every file a load depends on is checked before anything is loaded: the shards
// and model.h5 against the XXH64 and size the manifest records for them, manifest.textproto likewise, and
// manifest.pb against a checksum of its own, since nothing else vouches for it. manifest.pb is
//   "TSMANIF2" | u64 payload size | u64 XXH64 of the payload | payload (a serialized Manifest)
// with the integers little-endian. A manifest that is truncated, extended, or differs in a single bit is
// refused; so is one whose step is not the one its directory is named after. `latest` carries the XXH64 of
// the name it holds. Format 1 checkpoints (a bare Manifest, a one-line `latest`) still load, unchecked.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "launcher/common/config.h"
#include "proto/checkpoint.pb.h"

namespace tessera {

inline constexpr char kManifestFile[] = "manifest.pb";
inline constexpr char kManifestTextFile[] = "manifest.textproto";
inline constexpr char kVirtualFile[] = "model.h5";
inline constexpr char kLatestFile[] = "latest";
inline constexpr int kManifestFormatVersion = 2;
inline constexpr int kLegacyManifestFormatVersion = 1;  // no envelope

// RUN_DIR/checkpoints
std::string checkpoints_dir_of(const std::string& run_dir);
// "step_00000200" (8 digits, more when needed).
std::string step_dir_name(int64_t step);
// The step of a published checkpoint directory name, or nothing (temporaries and other names).
std::optional<int64_t> step_of_dir_name(const std::string& name);
// "shard_3.h5"
std::string shard_file_name(int world_rank);

// Writes manifest.textproto, then manifest.pb (Note [Manifest envelope]) recording the text copy's size and
// checksum, into dir, each atomically and fsynced.
void write_manifest(const std::string& dir, checkpoint::Manifest manifest);
// Reads dir/manifest.pb and checks its envelope. Throws CheckpointError when dir does not exist, when the file
// is missing ("the save was interrupted before it finished"), damaged (truncated, extended, any changed byte),
// of an unknown format version, or for another step than dir's name says.
checkpoint::Manifest read_manifest(const std::string& dir);
// The bytes of manifest.pb for a manifest, and back (path names the file in errors): for tests and tools.
std::string manifest_envelope(const checkpoint::Manifest& manifest);
checkpoint::Manifest parse_manifest_envelope(const std::string& bytes, const std::string& path);

// How one file compares with its manifest entry.
enum class FileStatus : int32_t { kOk = 0, kMissing = 1, kSizeDiffers = 2, kChecksumDiffers = 3, kUnreadable = 4 };
// Checks dir/entry.file: exists, has the recorded size, hashes to the recorded XXH64. Reads the whole file.
FileStatus check_file(const std::string& dir, const checkpoint::FileEntry& entry);
// "step_00000200/shard_1.h5 is truncated or was extended: the manifest says 1234 bytes" and the like.
std::string describe_file_problem(const std::string& dir, const checkpoint::FileEntry& entry, FileStatus status);

// Every file a checkpoint's manifest lists: the shards, then model.h5 and manifest.textproto.
std::vector<checkpoint::FileEntry> manifest_files(const checkpoint::Manifest& manifest);

// What stops a checkpoint directory from loading, one line each: no or damaged manifest, slices that do not
// tile their tensors, missing, truncated or corrupted shards. Empty when it loads; then the manifest goes to
// *manifest (if not null). Single-process: reads every shard (the training run spreads the same checks over
// its ranks).
std::vector<std::string> verify_checkpoint(const std::string& dir, checkpoint::Manifest* manifest = nullptr);
// The files only tools read, model.h5 and manifest.textproto: what is wrong with them, one line each. A load
// does not need them, so their damage is reported, not fatal.
std::vector<std::string> auxiliary_file_problems(const std::string& dir, const checkpoint::Manifest& manifest);

// The directory name `latest` points to, or nothing when there is no `latest` file. Throws CheckpointError
// when it is damaged (no step directory name, or a checksum line that does not match it).
std::optional<std::string> read_latest(const std::string& checkpoints_dir);
// Points `latest` at step_dir_name, atomically and durably.
void write_latest(const std::string& checkpoints_dir, const std::string& step_dir_name);

// Published checkpoint directories (step_NNNNNNNN, with or without a manifest), newest first.
struct CheckpointEntry {
  int64_t step = 0;
  std::string path;
};
std::vector<CheckpointEntry> list_checkpoints(const std::string& checkpoints_dir);

// The directories a retention pass deletes: the oldest published checkpoints beyond keep_last (keep_last 0
// keeps all), never `keep` (the directory name latest points to), and the temporaries of interrupted saves:
// step_N.tmp-<token> of any token but own_token (this run's token: its ranks may already be writing the next
// save). Lists only.
std::vector<std::string> old_checkpoints(const std::string& checkpoints_dir, int keep_last, const std::string& keep,
                                         const std::string& own_token);
// Deletes old_checkpoints(...) and returns their paths. Deletion failures are reported as CheckpointError.
std::vector<std::string> remove_old_checkpoints(const std::string& checkpoints_dir, int keep_last,
                                                const std::string& keep, const std::string& own_token);

// What `--resume SPEC` names. SPEC is "latest" (the run's own checkpoints), a checkpoint directory
// (step_NNNNNNNN, or any directory with manifest.pb), a checkpoints directory (one holding `latest` or
// step directories) or a run directory (one holding checkpoints/).
struct ResumeCandidates {
  // Checkpoint directories to try, in order: for a checkpoints directory the one `latest` names, then every
  // other newest first; for a checkpoint directory just that one.
  std::vector<std::string> dirs;
  bool may_fall_back = false;   // try the next when one is damaged
  std::string checkpoints_dir;  // where they were looked for (messages)
  std::string latest_problem;   // why `latest` was not followed, if it is damaged
};
// Throws ConfigError when SPEC is not "latest" and names no directory; `what` ("--resume", "tessera
// inspect") starts that message.
ResumeCandidates resume_candidates(const std::string& spec, const std::string& run_dir,
                                   const std::string& what = "--resume");

// The checkpoint a resume loads: the first candidate that `verify` finds usable. The training run (checks
// spread over its ranks) and `tessera inspect` (one process) both choose through it, so they agree.
using CheckpointVerifier = std::function<std::vector<std::string>(const std::string& dir, checkpoint::Manifest*)>;
struct CheckpointChoice {
  std::string dir;  // empty when there are no candidates at all
  checkpoint::Manifest manifest;
  std::vector<std::string> rejected;  // "DIR:" and its problems, for each candidate passed over
  std::string checkpoints_dir;        // where the candidates were looked for
  bool fell_back = false;             // not the checkpoint `latest` named (damaged, or `latest` itself was)
};
// on_rejected(dir, problems) runs for each unusable candidate before the next is tried (to log it). Throws
// CheckpointError naming every problem when the one candidate of a checkpoint directory is not usable, or
// when no candidate is.
CheckpointChoice choose_checkpoint(
    const ResumeCandidates& candidates, const CheckpointVerifier& verify,
    const std::function<void(const std::string& dir, const std::vector<std::string>& problems)>& on_rejected);

// The job config saved in the checkpoint `spec` names (the newest one whose manifest reads), with the command
// line's overrides applied as apply_overrides applies them to a file (their notices go to *notices, when not null)
// and validated. The run directory becomes the one holding that checkpoint
// (RUN_DIR/checkpoints/step_N), so a run continues where it was, unless --run-dir says otherwise. `flag` names
// the option in messages ("--resume"); *source is set to the checkpoint directory read. keep_layout false: the
// saved parallel layout is dropped before the overrides (all but parallel.timeout_s and parallel.comm), for
// the commands that run a checkpoint in a layout of their own (eval, generate).
config::JobConfig config_from_checkpoint(const std::string& spec, const std::string& run_dir,
                                         const ConfigOverrides& overrides, const char* flag, bool keep_layout,
                                         std::string* source, std::vector<std::string>* notices = nullptr);

}  // namespace tessera

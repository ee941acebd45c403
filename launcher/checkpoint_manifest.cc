// Checkpoint directories: names, manifest, integrity, latest, listing, retention, resume targets.
#include "launcher/checkpoint_manifest.h"

#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "core/check.h"
#include "launcher/checkpoint_layout.h"
#include "launcher/durable_file.h"
#include "launcher/xxhash64.h"

namespace tessera {

namespace fs = std::filesystem;

namespace {

constexpr char kStepPrefix[] = "step_";

std::string join_path(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

// A directory's name, also for paths that end in '/'.
std::string base_name(const std::string& path) {
  fs::path p(path);
  if (!p.has_filename()) p = p.parent_path();
  return p.filename().string();
}

}  // namespace

std::string checkpoints_dir_of(const std::string& run_dir) { return join_path(run_dir, "checkpoints"); }

std::string step_dir_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "%s%08lld", kStepPrefix, static_cast<long long>(step));
  return name;
}

std::optional<int64_t> step_of_dir_name(const std::string& name) {
  const std::string prefix = kStepPrefix;
  if (name.size() < prefix.size() + 8 || name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  int64_t step = 0;
  for (size_t i = prefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

std::string shard_file_name(int world_rank) { return "shard_" + std::to_string(world_rank) + ".h5"; }

void write_manifest(const std::string& dir, const checkpoint::Manifest& manifest) {
  std::string binary;
  TS_ASSERT(manifest.SerializeToString(&binary), "cannot serialize the manifest");
  std::string text;
  TS_ASSERT(google::protobuf::TextFormat::PrintToString(manifest, &text), "cannot print the manifest");
  text =
      "# Tessera checkpoint manifest (a copy of manifest.pb for humans; Tessera reads manifest.pb).\n"
      "# proto-file: proto/checkpoint.proto\n# proto-message: tessera.checkpoint.Manifest\n" +
      text;
  // The text copy first: manifest.pb appearing is what makes the directory a complete checkpoint.
  write_file_atomically(join_path(dir, kManifestTextFile), text);
  write_file_atomically(join_path(dir, kManifestFile), binary);
}

checkpoint::Manifest read_manifest(const std::string& dir) {
  const std::string path = join_path(dir, kManifestFile);
  TS_CHECK(fs::exists(path), CheckpointError, "checkpoint '", dir, "' has no ", kManifestFile,
           ": the save was interrupted before it finished, so it is incomplete");
  checkpoint::Manifest manifest;
  TS_CHECK(manifest.ParseFromString(read_file(path)), CheckpointError, "'", path,
           "' is not a readable checkpoint manifest (damaged?)");
  TS_CHECK(manifest.format_version() == kManifestFormatVersion, CheckpointError, "'", path,
           "' has checkpoint format version ", manifest.format_version(), "; this build reads version ",
           kManifestFormatVersion);
  return manifest;
}

FileStatus check_file(const std::string& dir, const checkpoint::FileEntry& entry) {
  const std::string path = join_path(dir, entry.file());
  std::error_code error;
  const uintmax_t size = fs::file_size(path, error);
  if (error) return fs::exists(path) ? FileStatus::kUnreadable : FileStatus::kMissing;
  if (size != entry.size_bytes()) return FileStatus::kSizeDiffers;
  try {
    uint64_t hashed_size = 0;
    if (xxh64_file(path, &hashed_size) != entry.xxh64() || hashed_size != entry.size_bytes()) {
      return FileStatus::kChecksumDiffers;
    }
  } catch (const CheckpointError&) {
    return FileStatus::kUnreadable;
  }
  return FileStatus::kOk;
}

std::string describe_file_problem(const std::string& dir, const checkpoint::FileEntry& entry, FileStatus status) {
  const std::string path = join_path(dir, entry.file());
  switch (status) {
    case FileStatus::kOk:
      return path + " is intact";
    case FileStatus::kMissing:
      return path + " is missing";
    case FileStatus::kSizeDiffers: {
      std::error_code error;
      const uintmax_t size = fs::file_size(path, error);
      return str_cat(
          path, " is truncated or was changed: ", error ? std::string("its size is unknown") : str_cat(size, " bytes"),
          ", the manifest says ", entry.size_bytes());
    }
    case FileStatus::kChecksumDiffers:
      return str_cat(path, " is corrupted: its XXH64 checksum differs from the manifest's (", hex64(entry.xxh64()),
                     ")");
    case FileStatus::kUnreadable:
      return path + " cannot be read";
  }
  return path;
}

std::vector<checkpoint::FileEntry> manifest_files(const checkpoint::Manifest& manifest) {
  std::vector<checkpoint::FileEntry> files;
  for (const checkpoint::Shard& shard : manifest.shards()) files.push_back(shard.file());
  if (manifest.has_virtual_file()) files.push_back(manifest.virtual_file());
  return files;
}

std::vector<std::string> verify_checkpoint(const std::string& dir) {
  checkpoint::Manifest manifest;
  try {
    manifest = read_manifest(dir);
  } catch (const CheckpointError& e) {
    return {e.what()};
  }
  std::vector<std::string> problems = tiling_problems(manifest);
  for (const checkpoint::FileEntry& entry : manifest_files(manifest)) {
    const FileStatus status = check_file(dir, entry);
    if (status != FileStatus::kOk) problems.push_back(describe_file_problem(dir, entry, status));
  }
  return problems;
}

std::optional<std::string> read_latest(const std::string& checkpoints_dir) {
  const std::string path = join_path(checkpoints_dir, kLatestFile);
  if (!fs::exists(path)) return std::nullopt;
  std::string name = read_file(path);
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  TS_CHECK(!name.empty() && name.find('/') == std::string::npos, CheckpointError, "'", path,
           "' does not name a checkpoint directory; delete it to use the newest complete checkpoint");
  return name;
}

void write_latest(const std::string& checkpoints_dir, const std::string& step_dir) {
  write_file_atomically(join_path(checkpoints_dir, kLatestFile), step_dir + "\n");
}

std::vector<CheckpointEntry> list_checkpoints(const std::string& checkpoints_dir) {
  std::vector<CheckpointEntry> entries;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(checkpoints_dir, error)) {
    if (!entry.is_directory()) continue;
    const std::optional<int64_t> step = step_of_dir_name(entry.path().filename().string());
    if (step) entries.push_back({*step, entry.path().string()});
  }
  std::sort(entries.begin(), entries.end(),
            [](const CheckpointEntry& a, const CheckpointEntry& b) { return a.step > b.step; });
  return entries;
}

std::vector<std::string> old_checkpoints(const std::string& checkpoints_dir, int keep_last, const std::string& keep,
                                         const std::string& own_token) {
  std::vector<std::string> old;
  if (keep_last > 0) {
    int kept = 0;
    for (const CheckpointEntry& entry : list_checkpoints(checkpoints_dir)) {
      if (base_name(entry.path) == keep || kept < keep_last) {
        ++kept;
        continue;
      }
      old.push_back(entry.path);
    }
  }
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(checkpoints_dir, error)) {
    const std::string name = entry.path().filename().string();
    const size_t tmp = name.find(".tmp-");
    if (entry.is_directory() && name.rfind(kStepPrefix, 0) == 0 && tmp != std::string::npos &&
        name.substr(tmp + 5) != own_token) {
      old.push_back(entry.path().string());
    }
  }
  return old;
}

std::vector<std::string> remove_old_checkpoints(const std::string& checkpoints_dir, int keep_last,
                                                const std::string& keep, const std::string& own_token) {
  const std::vector<std::string> old = old_checkpoints(checkpoints_dir, keep_last, keep, own_token);
  for (const std::string& path : old) {
    std::error_code error;
    fs::remove_all(path, error);
    TS_CHECK(!error, CheckpointError, "cannot delete old checkpoint '", path, "': ", error.message());
  }
  return old;
}

ResumeCandidates resume_candidates(const std::string& spec, const std::string& run_dir) {
  ResumeCandidates candidates;
  std::string dir = spec == "latest" ? checkpoints_dir_of(run_dir) : spec;
  TS_CHECK(spec == "latest" || fs::is_directory(dir), ConfigError, "--resume ", spec,
           ": no such directory; give a checkpoint directory (RUN_DIR/checkpoints/step_NNNNNNNN), a run directory, "
           "or 'latest'");
  const bool checkpoint_dir =
      spec != "latest" && (fs::exists(join_path(dir, kManifestFile)) || step_of_dir_name(base_name(dir)));
  if (checkpoint_dir) {
    candidates.dirs.push_back(dir);
    candidates.checkpoints_dir = fs::path(dir).parent_path().string();
    return candidates;
  }
  if (spec != "latest" && !fs::exists(join_path(dir, kLatestFile)) && fs::is_directory(checkpoints_dir_of(dir))) {
    dir = checkpoints_dir_of(dir);  // a run directory
  }
  candidates.checkpoints_dir = dir;
  candidates.may_fall_back = true;
  std::optional<std::string> latest;
  try {
    latest = read_latest(dir);
  } catch (const CheckpointError&) {
    latest.reset();  // a damaged pointer: fall back to the newest complete checkpoint
  }
  if (latest) candidates.dirs.push_back(join_path(dir, *latest));
  for (const CheckpointEntry& entry : list_checkpoints(dir)) {
    if (!latest || base_name(entry.path) != *latest) candidates.dirs.push_back(entry.path);
  }
  return candidates;
}

}  // namespace tessera

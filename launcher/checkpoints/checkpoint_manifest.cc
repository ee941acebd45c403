// Checkpoint directories: names, manifest, integrity, latest, listing, retention, resume targets.
#include "launcher/checkpoints/checkpoint_manifest.h"

#include <fmt/format.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "core/check.h"
#include "launcher/checkpoints/checkpoint_layout.h"
#include "launcher/common/checksum.h"
#include "launcher/common/config.h"
#include "launcher/common/durable_file.h"
#include "launcher/common/human_format.h"

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

std::string step_dir_name(int64_t step) { return fmt::format("{}{:08}", kStepPrefix, step); }

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

namespace {

constexpr char kManifestMagic[] = "TSMANIF2";  // 8 bytes, no terminator stored
constexpr size_t kMagicSize = 8;
constexpr size_t kEnvelopeHeaderSize = kMagicSize + 16;

void put_u64(std::string& out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint64_t get_u64(const std::string& in, size_t at) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(in[at + i]);
  return value;
}

std::string xxh64_line(const std::string& name) { return "xxh64 " + hex64(xxh64(name.data(), name.size())); }

}  // namespace

std::string manifest_envelope(const checkpoint::Manifest& manifest) {
  std::string payload;
  TS_ASSERT(manifest.SerializeToString(&payload), "cannot serialize the manifest");
  std::string out(kManifestMagic, kMagicSize);
  put_u64(out, payload.size());
  put_u64(out, xxh64(payload.data(), payload.size()));
  return out + payload;
}

checkpoint::Manifest parse_manifest_envelope(const std::string& bytes, const std::string& path) {
  const std::string damaged = str_cat("'", path, "' is damaged: ");
  checkpoint::Manifest manifest;
  if (bytes.size() >= kMagicSize && bytes.compare(0, kMagicSize, kManifestMagic, kMagicSize) == 0) {
    TS_CHECK(bytes.size() >= kEnvelopeHeaderSize && get_u64(bytes, kMagicSize) == bytes.size() - kEnvelopeHeaderSize,
             CheckpointError, damaged, "it is ", bytes.size(), " bytes, its header says ",
             bytes.size() >= kEnvelopeHeaderSize ? get_u64(bytes, kMagicSize) + kEnvelopeHeaderSize : 0,
             " (truncated or extended)");
    TS_CHECK(
        xxh64(bytes.data() + kEnvelopeHeaderSize, bytes.size() - kEnvelopeHeaderSize) == get_u64(bytes, kMagicSize + 8),
        CheckpointError, damaged, "its contents do not match their XXH64 checksum");
    TS_CHECK(manifest.ParseFromArray(bytes.data() + kEnvelopeHeaderSize,
                                     static_cast<int>(bytes.size() - kEnvelopeHeaderSize)),
             CheckpointError, damaged, "its checksum matches but it does not parse (written by another program?)");
    TS_CHECK(manifest.format_version() == kManifestFormatVersion, CheckpointError, "'", path,
             "' has checkpoint format version ", manifest.format_version(), "; this build reads versions ",
             kLegacyManifestFormatVersion, " and ", kManifestFormatVersion);
    return manifest;
  }
  // Format 1 (no envelope): a bare Manifest, whose first byte is the tag of format_version (field 1, varint).
  // No single bit flip turns the magic into it, and a legacy file must say version 1.
  TS_CHECK(!bytes.empty() && bytes[0] == 0x08 && manifest.ParseFromString(bytes) &&
               manifest.format_version() == kLegacyManifestFormatVersion,
           CheckpointError, damaged, "it is not a Tessera checkpoint manifest (its header is missing or altered)");
  return manifest;
}

void write_manifest(const std::string& dir, checkpoint::Manifest manifest) {
  manifest.clear_text_file();
  std::string text;
  TS_ASSERT(google::protobuf::TextFormat::PrintToString(manifest, &text), "cannot print the manifest");
  text =
      "# Tessera checkpoint manifest (a copy of manifest.pb for humans; Tessera reads manifest.pb).\n"
      "# proto-file: proto/checkpoint.proto\n# proto-message: tessera.checkpoint.Manifest\n" +
      text;
  // The text copy first: manifest.pb appearing is what makes the directory a complete checkpoint, and it
  // records the text copy's checksum.
  write_file_atomically(join_path(dir, kManifestTextFile), text);
  checkpoint::FileEntry* entry = manifest.mutable_text_file();
  entry->set_file(kManifestTextFile);
  entry->set_size_bytes(text.size());
  entry->set_xxh64(xxh64(text.data(), text.size()));
  write_file_atomically(join_path(dir, kManifestFile), manifest_envelope(manifest));
}

checkpoint::Manifest read_manifest(const std::string& dir) {
  std::error_code error;
  TS_CHECK(fs::is_directory(dir, error), CheckpointError, "checkpoint directory '", dir, "' does not exist");
  const std::string path = join_path(dir, kManifestFile);
  TS_CHECK(fs::exists(fs::symlink_status(path, error)), CheckpointError, "checkpoint '", dir, "' has no ",
           kManifestFile, ": the save was interrupted before it finished, so it is incomplete");
  checkpoint::Manifest manifest = parse_manifest_envelope(read_file(path), path);
  // A directory renamed or copied under another step's name would resume at the wrong data position.
  const std::optional<int64_t> named_step = step_of_dir_name(base_name(dir));
  TS_CHECK(!named_step || *named_step == manifest.step(), CheckpointError, "'", path, "' is for step ", manifest.step(),
           " but its directory is named ", base_name(dir),
           ": the directory was renamed or its manifest replaced; do not resume from it");
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
  if (manifest.has_text_file()) files.push_back(manifest.text_file());
  return files;
}

std::vector<std::string> verify_checkpoint(const std::string& dir, checkpoint::Manifest* manifest_out) {
  checkpoint::Manifest manifest;
  try {
    manifest = read_manifest(dir);
  } catch (const CheckpointError& e) {
    return {e.what()};
  }
  std::vector<std::string> problems = tiling_problems(manifest);
  for (const checkpoint::Shard& shard : manifest.shards()) {
    const FileStatus status = check_file(dir, shard.file());
    if (status != FileStatus::kOk) problems.push_back(describe_file_problem(dir, shard.file(), status));
  }
  if (manifest_out != nullptr) *manifest_out = std::move(manifest);
  return problems;
}

std::vector<std::string> auxiliary_file_problems(const std::string& dir, const checkpoint::Manifest& manifest) {
  std::vector<std::string> problems;
  for (const checkpoint::FileEntry* entry : {&manifest.virtual_file(), &manifest.text_file()}) {
    if (entry->file().empty()) continue;
    const FileStatus status = check_file(dir, *entry);
    if (status != FileStatus::kOk) problems.push_back(describe_file_problem(dir, *entry, status));
  }
  return problems;
}

std::optional<std::string> read_latest(const std::string& checkpoints_dir) {
  const std::string path = join_path(checkpoints_dir, kLatestFile);
  std::error_code error;
  if (!fs::exists(fs::symlink_status(path, error))) return std::nullopt;
  const std::vector<std::string> lines = split_lines(read_file(path));
  const std::string hint = "; delete it to use the newest complete checkpoint";
  TS_CHECK(!lines.empty() && step_of_dir_name(lines[0]), CheckpointError, "'", path,
           "' is damaged: it does not name a checkpoint directory", hint);
  // Format 1 had the name alone; since then a second line holds its XXH64, so that a damaged pointer is never
  // taken for one to another (older) checkpoint.
  TS_CHECK(lines.size() == 1 || (lines.size() == 2 && lines[1] == xxh64_line(lines[0])), CheckpointError, "'", path,
           "' is damaged: its checksum line does not match the name it holds", hint);
  return lines[0];
}

void write_latest(const std::string& checkpoints_dir, const std::string& step_dir) {
  write_file_atomically(join_path(checkpoints_dir, kLatestFile), step_dir + "\n" + xxh64_line(step_dir) + "\n");
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

ResumeCandidates resume_candidates(const std::string& spec, const std::string& run_dir, const std::string& what) {
  ResumeCandidates candidates;
  std::string dir = spec == "latest" ? checkpoints_dir_of(run_dir) : spec;
  std::error_code error;
  TS_CHECK(spec == "latest" || fs::is_directory(dir, error), ConfigError, what, " ", spec,
           fs::exists(dir, error) ? ": not a directory" : ": no such directory",
           "; give a checkpoint directory (RUN_DIR/checkpoints/step_NNNNNNNN), a run directory",
           what == "--resume" ? ", or 'latest'" : "");
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
  } catch (const CheckpointError& e) {
    candidates.latest_problem = e.what();  // fall back to the newest complete checkpoint
  }
  if (latest) candidates.dirs.push_back(join_path(dir, *latest));
  for (const CheckpointEntry& entry : list_checkpoints(dir)) {
    if (!latest || base_name(entry.path) != *latest) candidates.dirs.push_back(entry.path);
  }
  return candidates;
}

CheckpointChoice choose_checkpoint(
    const ResumeCandidates& candidates, const CheckpointVerifier& verify,
    const std::function<void(const std::string& dir, const std::vector<std::string>& problems)>& on_rejected) {
  CheckpointChoice choice;
  for (const std::string& dir : candidates.dirs) {
    const std::vector<std::string> problems = verify(dir, &choice.manifest);
    if (problems.empty()) {
      choice.dir = dir;
      return choice;
    }
    TS_CHECK(candidates.may_fall_back, CheckpointError, "checkpoint ", dir,
             " cannot be loaded:", join_lines(problems, "  "),
             "\nResume from another checkpoint (--resume latest picks the newest complete one).");
    choice.rejected.push_back(dir + ":" + join_lines(problems, "      "));
    if (on_rejected) on_rejected(dir, problems);
  }
  TS_CHECK(candidates.dirs.empty(), CheckpointError, "no usable checkpoint in ", candidates.checkpoints_dir, ":",
           join_lines(choice.rejected, "  - "), "\nStart a new run without --resume, or repair the files.");
  return choice;
}

config::JobConfig config_from_checkpoint(const std::string& spec, const std::string& run_dir,
                                         const ConfigOverrides& overrides, const char* flag, bool keep_layout,
                                         std::string* source, std::vector<std::string>* notices) {
  TS_CHECK(spec != "latest" || !run_dir.empty(), ConfigError, flag,
           " latest without --config needs --run-dir RUN_DIR (where the run's checkpoints are); or give ", flag,
           " RUN_DIR or a checkpoint directory");
  const ResumeCandidates candidates = resume_candidates(spec, run_dir, flag);
  std::string problems;
  for (const std::string& dir : candidates.dirs) {
    try {
      const checkpoint::Manifest manifest = read_manifest(dir);
      TS_CHECK(manifest.has_config(), CheckpointError, dir, ": the manifest holds no job config");
      config::JobConfig config = manifest.config();
      const std::filesystem::path checkpoints = std::filesystem::path(dir).parent_path();
      if (checkpoints.filename() == "checkpoints") config.mutable_logging()->set_run_dir(checkpoints.parent_path());
      if (!keep_layout) {
        // The layout it was trained in says nothing about this one; the timeout and transport still apply.
        config::ParallelConfig parallel;
        parallel.set_timeout_s(config.parallel().timeout_s());
        parallel.set_comm(config.parallel().comm());
        *config.mutable_parallel() = parallel;
      }
      const std::vector<std::string> lines = apply_overrides(config, overrides);
      validate_job_config(config);
      if (notices != nullptr) notices->insert(notices->end(), lines.begin(), lines.end());
      *source = dir;
      return config;
    } catch (const CheckpointError& error) {
      problems += str_cat("\n  ", error.what());
    }
  }
  TS_CHECK(false, ConfigError, flag, " ", spec, ": no checkpoint in ", candidates.checkpoints_dir,
           " has a readable manifest to take the job config from", problems,
           keep_layout ? "\ngive the job with --config FILE.textproto" : "");
  return {};
}

}  // namespace tessera

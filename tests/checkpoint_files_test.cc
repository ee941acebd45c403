// Checkpoint files without MPI: every rank of a layout simulated in one process writes its shard, rank 0's
// publish step makes the directory, and every rank of another layout reads its slices back bit-exactly (all
// three tensor kinds, vocabulary padding, ZeRO-like sharded moments); model.h5 presents whole tensors; damaged
// checkpoints are reported by name; latest, listing, retention, resume targets and the config fields.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/check.h"
#include "launcher/checkpoints/checkpoint.h"
#include "launcher/checkpoints/checkpoint_manifest.h"
#include "launcher/checkpoints/checkpoint_shard.h"
#include "launcher/common/config.h"
#include "launcher/common/durable_file.h"
#include "launcher/common/hdf5_file.h"
#include "models/registry.h"
#include "tests/checkpoint_state.h"
#include "tests/temp_dir.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using testing::error_message;
using testing::ShardState;
using testing::TempDir;
using testing::tiny_model;

struct SimulatedLayout {
  int tp = 1, dp = 1;
  bool sharded_optimizer = false;  // ZeRO-1-like: DP rank d stores moments of flat range d of dp
};

std::string layout_name(const SimulatedLayout& l) {
  return str_cat("tp=", l.tp, " dp=", l.dp, l.sharded_optimizer ? " (sharded moments)" : "");
}

// Writes a checkpoint of `step` as every rank of `layout` would (each its own shard), then publishes it as
// rank 0 does. Returns the checkpoint directory.
std::string save_simulated(const std::string& checkpoints_dir, const SimulatedLayout& layout, int64_t step,
                           const config::JobConfig* job = nullptr) {
  const std::string tmp = checkpoints_dir + "/" + step_dir_name(step) + ".tmp-test";
  fs::create_directories(tmp);
  checkpoint::Manifest manifest;
  manifest.set_format_version(kManifestFormatVersion);
  manifest.set_step(step);
  manifest.set_optimizer_steps(step);
  if (job != nullptr) *manifest.mutable_config() = *job;
  for (int d = 0; d < layout.dp; ++d) {
    for (int t = 0; t < layout.tp; ++t) {
      ShardState state(tiny_model(), t, layout.tp, 0.0f);
      state.fill_expected();
      const int64_t n = static_cast<int64_t>(state.values.size());
      ReplicaRole role;
      role.dp_rank = d;
      role.optimizer_sharded = layout.sharded_optimizer;
      // Sharded moments: DP rank d keeps (and here holds) only its range of the flat buffer.
      const int64_t begin = layout.sharded_optimizer ? n * d / layout.dp : 0;
      const int64_t end = layout.sharded_optimizer ? n * (d + 1) / layout.dp : n;
      const std::vector<StatePiece> pieces = plan_state_pieces(state.params, state.optimizer_view(begin, end), role);
      std::vector<ShardWriteItem> items;
      for (const SliceWrite& write : plan_slice_writes(state.params, pieces)) {
        items.push_back({write.slice, pieces[write.piece].memory.f32(), write.runs});
      }
      if (items.empty()) continue;
      const int rank = d * layout.tp + t;
      const std::string name = shard_file_name(rank);
      checkpoint::Shard* shard = manifest.add_shards();
      *shard = write_shard_file(tmp + "/" + name, name, items, step);
      shard->set_world_rank(rank);
    }
  }
  return publish_checkpoint(tmp, checkpoints_dir, manifest);
}

// Loads every TP rank of tp_size from dir and checks each element bit-exactly (padding zero).
void check_load(const std::string& dir, int tp_size) {
  const checkpoint::Manifest manifest = read_manifest(dir);
  for (int t = 0; t < tp_size; ++t) {
    ShardState state(tiny_model(), t, tp_size, std::numeric_limits<float>::quiet_NaN());
    const std::vector<StatePiece> pieces = plan_state_pieces(state.params, state.optimizer_view(), {});
    for (const StatePiece& piece : pieces) std::fill_n(piece.memory.f32(), piece.memory.numel(), 0.0f);
    for (const SliceRead& read : plan_slice_reads(state.params, pieces, manifest, dir)) {
      ShardReader reader(dir + "/" + manifest.shards(read.shard).file().file());
      const StatePiece& piece = pieces[read.piece];
      reader.read(manifest.shards(read.shard).tensors(read.tensor), read.within, piece.memory.f32(),
                  piece.memory.numel(), read.runs);
    }
    for (StateKind kind : kStateKinds) {
      const std::vector<float> want = state.expected(kind);
      ASSERT_EQ(std::memcmp(state.of(kind).data(), want.data(), want.size() * sizeof(float)), 0)
          << state_kind_group(kind) << " differs on TP rank " << t << " of " << tp_size;
    }
  }
}

TEST(CheckpointFiles, RoundTripBitExactAcrossLayouts) {
  const std::vector<SimulatedLayout> layouts = {{1, 1}, {2, 1}, {1, 2}, {2, 2}, {4, 1}, {1, 4}, {2, 2, true}};
  for (const SimulatedLayout& saved : layouts) {
    TempDir dir;
    const std::string checkpoint = save_simulated(dir.file("checkpoints"), saved, 7);
    EXPECT_TRUE(verify_checkpoint(checkpoint).empty()) << layout_name(saved);
    for (int tp : {1, 2, 4}) {
      SCOPED_TRACE("saved in " + layout_name(saved) + ", loaded with tp=" + std::to_string(tp));
      check_load(checkpoint, tp);
    }
  }
}

TEST(CheckpointFiles, StoresOneCopyOfTheModelAndOptimizer) {
  TempDir dir;
  const std::string checkpoint = save_simulated(dir.file("checkpoints"), {2, 2}, 1);
  const checkpoint::Manifest manifest = read_manifest(checkpoint);
  EXPECT_EQ(manifest.shards_size(), 2);  // DP rank 1 stores nothing
  int64_t values = 0;
  for (const auto& shard : manifest.shards()) {
    for (const auto& slice : shard.tensors()) values += testing::numel_of({slice.count().begin(), slice.count().end()});
  }
  EXPECT_EQ(values, 3 * num_parameters(tiny_model()));
}

TEST(CheckpointFiles, VirtualFileReadsWholeTensors) {
  TempDir dir;
  const std::string checkpoint = save_simulated(dir.file("checkpoints"), {4, 1}, 2);
  // Read from elsewhere: the shard names in model.h5 are relative to its own directory.
  const fs::path cwd = fs::current_path();
  fs::current_path("/");
  H5Reader file(checkpoint + "/" + kVirtualFile);
  for (const ParamSpec& spec : gpt2_param_specs(tiny_model())) {
    for (StateKind kind : kStateKinds) {
      std::vector<int64_t> shape;
      const std::vector<float> values = file.read_f32(std::string(state_kind_group(kind)) + "/" + spec.name, &shape);
      EXPECT_EQ(shape, spec.shape) << spec.name;
      for (int64_t g = 0; g < spec.numel(); ++g) {
        ASSERT_EQ(values[g], testing::expected_value(kind, spec.name, g)) << state_kind_group(kind) << "/" << spec.name;
      }
    }
  }
  fs::current_path(cwd);
}

// ---- integrity ----------------------------------------------------------------------------------------------------

void flip_byte(const std::string& path, uint64_t offset) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  file.read(&c, 1);
  c = static_cast<char>(c ^ 0x01);
  file.seekp(static_cast<std::streamoff>(offset));
  file.write(&c, 1);
}

std::string joined(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& line : lines) out += line + "\n";
  return out;
}

TEST(CheckpointIntegrity, FlippedByteTruncationMissingShardAndManifestAreNamed) {
  TempDir dir;
  const std::string checkpoint = save_simulated(dir.file("checkpoints"), {2, 1}, 3);
  const std::string shard = checkpoint + "/shard_1.h5";
  const uint64_t size = fs::file_size(shard);

  flip_byte(shard, size / 2);
  std::string problems = joined(verify_checkpoint(checkpoint));
  EXPECT_NE(problems.find("shard_1.h5 is corrupted: its XXH64 checksum differs"), std::string::npos) << problems;
  flip_byte(shard, size / 2);
  EXPECT_TRUE(verify_checkpoint(checkpoint).empty());

  fs::resize_file(shard, size - 100);
  problems = joined(verify_checkpoint(checkpoint));
  EXPECT_NE(problems.find("shard_1.h5 is truncated or was changed: " + std::to_string(size - 100) +
                          " bytes, the manifest says " + std::to_string(size)),
            std::string::npos)
      << problems;

  fs::remove(shard);
  problems = joined(verify_checkpoint(checkpoint));
  EXPECT_NE(problems.find("shard_1.h5 is missing"), std::string::npos) << problems;

  fs::remove(checkpoint + "/" + kManifestFile);
  problems = joined(verify_checkpoint(checkpoint));
  EXPECT_NE(problems.find("has no manifest.pb: the save was interrupted"), std::string::npos) << problems;
}

TEST(CheckpointIntegrity, ReadingADamagedShardIsACheckpointErrorNotAnHdf5Stack) {
  TempDir dir;
  const std::string checkpoint = save_simulated(dir.file("checkpoints"), {1, 1}, 3);
  testing::write_text_file(checkpoint + "/shard_0.h5", "not hdf5");
  const std::string message = error_message<CheckpointError>([&] { check_load(checkpoint, 1); });
  EXPECT_NE(message.find("shard_0.h5' is missing or not an HDF5 file"), std::string::npos) << message;
  EXPECT_EQ(message.find("HDF5-DIAG"), std::string::npos) << message;
}

config::JobConfig job_with_lr(double lr) {
  config::JobConfig job;
  job.set_name("fuzz");
  job.mutable_optimizer()->set_lr(lr);
  job.mutable_train()->set_steps(1000);
  return job;
}

TEST(CheckpointIntegrity, EveryBitFlipOfTheManifestIsRefused) {
  checkpoint::Manifest manifest;
  manifest.set_format_version(kManifestFormatVersion);
  manifest.set_step(4);
  *manifest.mutable_config() = job_with_lr(3e-4);
  checkpoint::TensorSlice* slice = manifest.add_shards()->add_tensors();
  slice->set_name("h.0.ln2.weight");
  slice->set_dataset("model/h.0.ln2.weight[0]");
  const std::string bytes = manifest_envelope(manifest);
  EXPECT_EQ(parse_manifest_envelope(bytes, "m").SerializeAsString(), manifest.SerializeAsString());
  for (size_t bit = 0; bit < 8 * bytes.size(); ++bit) {
    std::string damaged = bytes;
    damaged[bit / 8] = static_cast<char>(damaged[bit / 8] ^ (1 << (bit % 8)));
    EXPECT_THROW(parse_manifest_envelope(damaged, "m"), CheckpointError) << "bit " << bit;
  }
  for (size_t size = 0; size < bytes.size(); ++size) {
    EXPECT_THROW(parse_manifest_envelope(bytes.substr(0, size), "m"), CheckpointError) << "truncated to " << size;
  }
  EXPECT_THROW(parse_manifest_envelope(bytes + '\0', "m"), CheckpointError);
  // Format 1, a bare Manifest, still reads.
  manifest.set_format_version(kLegacyManifestFormatVersion);
  EXPECT_EQ(parse_manifest_envelope(manifest.SerializeAsString(), "m").step(), 4);
}

TEST(CheckpointIntegrity, EveryBitFlipOfLatestIsRefused) {
  TempDir dir;
  write_latest(dir.path(), "step_00000004");
  const std::string path = dir.file(kLatestFile);
  const std::string bytes = read_file(path);
  EXPECT_EQ(read_latest(dir.path()), std::optional<std::string>("step_00000004"));
  for (size_t bit = 0; bit < 8 * bytes.size(); ++bit) {
    std::string damaged = bytes;
    damaged[bit / 8] = static_cast<char>(damaged[bit / 8] ^ (1 << (bit % 8)));
    testing::write_text_file(path, damaged);
    EXPECT_THROW(read_latest(dir.path()), CheckpointError) << "bit " << bit << ": " << damaged;
  }
  testing::write_text_file(path, "step_00000002\n");  // format 1: the name alone
  EXPECT_EQ(read_latest(dir.path()), std::optional<std::string>("step_00000002"));
}

TEST(CheckpointIntegrity, AManifestThatPointsASliceAtAnotherTensorsDatasetIsRefusedOnLoad) {
  // A manifest with a valid checksum that is wrong all the same (a writer's bug): the loader checks each
  // dataset's own attributes, so h.0.ln2.weight is never loaded from h.1's dataset.
  TempDir dir;
  const std::string checkpoint = save_simulated(dir.file("checkpoints"), {1, 1}, 3);
  checkpoint::Manifest manifest = read_manifest(checkpoint);
  for (checkpoint::TensorSlice& slice : *manifest.mutable_shards(0)->mutable_tensors()) {
    if (slice.name() == "h.0.ln2.weight" && slice.kind() == checkpoint::MODEL) {
      slice.set_dataset("model/h.1.ln2.weight[0]");
    }
  }
  write_manifest(checkpoint, manifest);
  const std::string message = error_message<CheckpointError>([&] { check_load(checkpoint, 1); });
  EXPECT_NE(message.find("dataset 'model/h.1.ln2.weight[0]': its attributes do not name model/h.0.ln2.weight"),
            std::string::npos)
      << message;
}

TEST(CheckpointIntegrity, ACheckpointUnderAnotherStepsNameIsRefused) {
  TempDir dir;
  const std::string checkpoint = save_simulated(dir.file("checkpoints"), {1, 1}, 3);
  const std::string renamed = dir.file("checkpoints/" + step_dir_name(5));
  fs::rename(checkpoint, renamed);
  const std::string problems = joined(verify_checkpoint(renamed));
  EXPECT_NE(problems.find("is for step 3 but its directory is named step_00000005"), std::string::npos) << problems;
}

// What a resume of a checkpoints directory loads, through the code path the training run uses (resume
// candidates, choose_checkpoint, the slice plan, ShardReader), at tp=1.
struct Loaded {
  bool loaded = false;
  bool problem_reported = false;  // a damaged latest, a checkpoint passed over, or damaged auxiliary files
  std::string dir;
  int64_t step = -1;
  std::string config;  // serialized JobConfig
  bool tensors_as_saved = false;
};

Loaded load_like_a_resume(const std::string& checkpoints_dir) {
  Loaded out;
  try {
    const ResumeCandidates candidates = resume_candidates(checkpoints_dir, "");
    const CheckpointChoice choice = choose_checkpoint(
        candidates, [](const std::string& dir, checkpoint::Manifest* m) { return verify_checkpoint(dir, m); }, nullptr);
    if (choice.dir.empty()) return out;
    out.problem_reported = !candidates.latest_problem.empty() || !choice.rejected.empty() ||
                           !auxiliary_file_problems(choice.dir, choice.manifest).empty();
    ShardState state(tiny_model(), 0, 1, std::numeric_limits<float>::quiet_NaN());
    const std::vector<StatePiece> pieces = plan_state_pieces(state.params, state.optimizer_view(), {});
    for (const SliceRead& read : plan_slice_reads(state.params, pieces, choice.manifest, choice.dir)) {
      ShardReader reader(choice.dir + "/" + choice.manifest.shards(read.shard).file().file());
      const StatePiece& piece = pieces[read.piece];
      reader.read(choice.manifest.shards(read.shard).tensors(read.tensor), read.within, piece.memory.f32(),
                  piece.memory.numel(), read.runs);
    }
    out.tensors_as_saved = true;
    for (StateKind kind : kStateKinds) {
      const std::vector<float> want = state.expected(kind);
      out.tensors_as_saved &= std::memcmp(state.of(kind).data(), want.data(), want.size() * sizeof(float)) == 0;
    }
    out.loaded = true;
    out.dir = choice.dir;
    out.step = choice.manifest.step();
    out.config = choice.manifest.config().SerializeAsString();
  } catch (const CheckpointError&) {
    out.loaded = false;
  }
  return out;
}

TEST(CheckpointIntegrity, FuzzRandomBitFlipsInEveryFileNeverLoadOtherStateThanWasSaved) {
  TempDir dir;
  const std::string checkpoints = dir.file("checkpoints");
  const config::JobConfig older = job_with_lr(1e-3), newer = job_with_lr(3e-4);
  save_simulated(checkpoints, {2, 2, true}, 2, &older);
  const std::string checkpoint = save_simulated(checkpoints, {2, 2, true}, 4, &newer);
  const Loaded clean = load_like_a_resume(checkpoints);
  ASSERT_TRUE(clean.loaded && clean.tensors_as_saved && !clean.problem_reported);
  ASSERT_EQ(clean.step, 4);
  ASSERT_EQ(clean.config, newer.SerializeAsString());

  // Every file of the newest checkpoint, and latest.
  std::vector<std::string> files = {checkpoints + "/" + kLatestFile};
  for (const auto& entry : fs::directory_iterator(checkpoint)) files.push_back(entry.path().string());
  ASSERT_EQ(files.size(), 1u + 4u + 3u);  // latest; 4 shards, model.h5, manifest.pb, manifest.textproto
  std::mt19937_64 rng(20261203);
  std::map<std::string, int> detected_by_file;
  int fell_back = 0, refused = 0;
  constexpr int kTrials = 400;
  for (int trial = 0; trial < kTrials; ++trial) {
    const std::string& path = files[rng() % files.size()];
    const std::string original = read_file(path);
    std::string damaged = original;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      const size_t bit = rng() % (8 * damaged.size());
      damaged[bit / 8] = static_cast<char>(damaged[bit / 8] ^ (1 << (bit % 8)));
    }
    if (damaged == original) continue;  // two flips of one bit
    testing::write_text_file(path, damaged);
    const Loaded r = load_like_a_resume(checkpoints);
    testing::write_text_file(path, original);
    SCOPED_TRACE(str_cat("trial ", trial, ": ", flips, " bit(s) flipped in ", path));
    if (!r.loaded) {
      ++refused;
      ++detected_by_file[fs::path(path).filename().string()];
      continue;
    }
    // A load succeeded: the damage was reported, and what was loaded is exactly one saved checkpoint.
    EXPECT_TRUE(r.problem_reported);
    EXPECT_TRUE(r.tensors_as_saved);
    if (r.step == 4) {
      EXPECT_EQ(r.config, newer.SerializeAsString());
    } else {
      ++fell_back;
      EXPECT_EQ(r.step, 2);
      EXPECT_EQ(r.config, older.SerializeAsString());
    }
    if (r.problem_reported) ++detected_by_file[fs::path(path).filename().string()];
  }
  EXPECT_EQ(load_like_a_resume(checkpoints).step, 4);
  // Every kind of file was hit and every hit detected; damage to the newest checkpoint's shards or manifest
  // falls back to step 2.
  int detected = 0;
  for (const auto& [file, count] : detected_by_file) detected += count;
  EXPECT_GT(fell_back, 0);
  EXPECT_EQ(detected_by_file.size(), files.size());
  EXPECT_GE(detected, kTrials - 5);  // trials whose flips cancel are skipped
  std::printf("%d trials: %d fell back to step 2, %d refused outright, every one detected\n", kTrials, fell_back,
              refused);
}

// ---- directories ------------------------------------------------------------------------------------------------

TEST(CheckpointDirectories, NamesLatestListingAndRetention) {
  EXPECT_EQ(step_dir_name(42), "step_00000042");
  EXPECT_EQ(step_dir_name(123456789), "step_123456789");
  EXPECT_EQ(step_of_dir_name("step_00000042"), 42);
  EXPECT_FALSE(step_of_dir_name("step_00000042.tmp-1234").has_value());
  EXPECT_FALSE(step_of_dir_name("latest").has_value());

  TempDir dir;
  const std::string checkpoints = dir.file("checkpoints");
  for (int64_t step : {2, 4, 6, 8}) save_simulated(checkpoints, {1, 1}, step);
  EXPECT_EQ(read_latest(checkpoints), "step_00000008");
  std::vector<CheckpointEntry> entries = list_checkpoints(checkpoints);
  ASSERT_EQ(entries.size(), 4u);
  EXPECT_EQ(entries[0].step, 8);
  EXPECT_EQ(entries[3].step, 2);

  // A crashed save's temporary is removed, not this run's own (its ranks may be writing the next save); the
  // latest is kept even when it is not among the newest.
  fs::create_directories(checkpoints + "/step_00000010.tmp-dead");
  fs::create_directories(checkpoints + "/step_00000012.tmp-mine");
  write_latest(checkpoints, "step_00000002");
  const std::vector<std::string> removed = remove_old_checkpoints(checkpoints, 2, "step_00000002", "mine");
  EXPECT_EQ(removed.size(), 2u);  // step 4 and the temporary
  entries = list_checkpoints(checkpoints);
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].step, 8);
  EXPECT_EQ(entries[1].step, 6);
  EXPECT_EQ(entries[2].step, 2);
  EXPECT_FALSE(fs::exists(checkpoints + "/step_00000010.tmp-dead"));
  EXPECT_TRUE(fs::exists(checkpoints + "/step_00000012.tmp-mine"));
  // keep_last 0 keeps everything.
  EXPECT_TRUE(remove_old_checkpoints(checkpoints, 0, "step_00000008", "mine").empty());
}

TEST(CheckpointDirectories, SavingAStepAgainReplacesIt) {
  TempDir dir;
  const std::string checkpoints = dir.file("checkpoints");
  save_simulated(checkpoints, {1, 1}, 5);
  const std::string again = save_simulated(checkpoints, {2, 1}, 5);
  EXPECT_TRUE(verify_checkpoint(again).empty());
  EXPECT_EQ(read_manifest(again).shards_size(), 2);
  EXPECT_EQ(list_checkpoints(checkpoints).size(), 1u);
}

TEST(CheckpointDirectories, ResumeCandidates) {
  TempDir dir;
  const std::string run = dir.file("run");
  const std::string checkpoints = checkpoints_dir_of(run);
  for (int64_t step : {1, 2, 3}) save_simulated(checkpoints, {1, 1}, step);
  write_latest(checkpoints, "step_00000002");  // e.g. step 3 was renamed but latest not yet moved

  ResumeCandidates latest = resume_candidates("latest", run);
  EXPECT_TRUE(latest.may_fall_back);
  ASSERT_EQ(latest.dirs.size(), 3u);
  EXPECT_EQ(fs::path(latest.dirs[0]).filename(), "step_00000002");
  EXPECT_EQ(fs::path(latest.dirs[1]).filename(), "step_00000003");
  EXPECT_EQ(fs::path(latest.dirs[2]).filename(), "step_00000001");
  // A run directory or a checkpoints directory mean the same.
  EXPECT_EQ(resume_candidates(run, "elsewhere").dirs, latest.dirs);
  EXPECT_EQ(resume_candidates(checkpoints, "elsewhere").dirs, latest.dirs);
  // A checkpoint directory: just it, no fallback.
  ResumeCandidates one = resume_candidates(checkpoints + "/step_00000001", "");
  EXPECT_FALSE(one.may_fall_back);
  ASSERT_EQ(one.dirs.size(), 1u);

  EXPECT_TRUE(resume_candidates("latest", dir.file("fresh")).dirs.empty());
  const std::string message = error_message<ConfigError>([&] { resume_candidates(dir.file("nope"), ""); });
  EXPECT_NE(message.find("no such directory"), std::string::npos) << message;
}

TEST(CheckpointDirectories, WriteFileAtomicallyReplacesWholly) {
  TempDir dir;
  write_latest(dir.path().string(), "step_00000001");
  write_latest(dir.path().string(), "step_00000002");
  EXPECT_EQ(read_latest(dir.path().string()), "step_00000002");
  EXPECT_FALSE(fs::exists(dir.file("latest.tmp")));
}

// ---- config ------------------------------------------------------------------------------------------------------

TEST(CheckpointConfig, DefaultsAndValidation) {
  config::JobConfig job = parse_job_config(
      "model { vocab_size: 64 n_layer: 1 n_head: 2 n_embd: 16 max_seq_len: 16 }\n"
      "train { steps: 3 global_batch: 2 seq_len: 16 }\ndata { mock: true }\n",
      "job.textproto");
  EXPECT_EQ(job.checkpoint().every_steps(), 0);
  EXPECT_EQ(job.checkpoint().keep_last(), 3);
  EXPECT_FALSE(job.checkpoint().async());
  EXPECT_TRUE(job.checkpoint().save_on_exit());
  validate_job_config(job);
  apply_override(job, "checkpoint.every_steps=-1");
  apply_override(job, "checkpoint.keep_last=-2");
  const std::string message = error_message<ConfigError>([&] { validate_job_config(job); });
  EXPECT_NE(message.find("checkpoint.every_steps (-1) must be >= 0"), std::string::npos) << message;
  EXPECT_NE(message.find("checkpoint.keep_last (-2) must be >= 0 (0 = keep every checkpoint)"), std::string::npos)
      << message;
  apply_override(job, "checkpoint.async=true");
  EXPECT_TRUE(job.checkpoint().async());
}

}  // namespace
}  // namespace tessera

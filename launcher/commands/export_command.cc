// `tessera export --checkpoint PATH --format hf --out DIR [--dtype f32|bf16] [--max-shard-size SIZE]`: writes a
// checkpoint's weights as a directory Hugging Face transformers loads with from_pretrained
// (launcher/interop/hf_directory.h). PATH is a checkpoint directory, or a checkpoints or run directory: then
// the checkpoint `train --resume PATH` would load, chosen by the same code (choose_checkpoint). Each tensor is
// assembled whole from the shards' stored boxes (checked against the manifest's sizes and checksums first),
// one at a time. The job saved in the checkpoint names the tokenizer (data.tokenizer) shipped with it.
// Single process, no MPI. The progress (tensors read, bytes) goes to stderr (launcher/common/progress.h).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/check.h"
#include "launcher/checkpoints/checkpoint_layout.h"
#include "launcher/checkpoints/checkpoint_manifest.h"
#include "launcher/checkpoints/checkpoint_shard.h"
#include "launcher/commands/commands.h"
#include "launcher/common/checksum.h"
#include "launcher/common/config.h"
#include "launcher/common/human_format.h"
#include "launcher/common/progress.h"
#include "launcher/common/regular_file.h"
#include "launcher/interop/hf_directory.h"
#include "models/registry.h"

namespace tessera {

namespace {

namespace fs = std::filesystem;

// Whole model tensors of one checkpoint, read from its shards.
class CheckpointTensors {
 public:
  CheckpointTensors(std::string dir, const checkpoint::Manifest& manifest) : dir_(std::move(dir)), manifest_(manifest) {
    for (int s = 0; s < manifest.shards_size(); ++s) {
      for (int t = 0; t < manifest.shards(s).tensors_size(); ++t) {
        const checkpoint::TensorSlice& slice = manifest.shards(s).tensors(t);
        if (from_proto(slice.kind()) == StateKind::kModel) slices_[slice.name()].push_back({s, t});
      }
    }
  }

  // The number of model tensors stored.
  size_t count() const { return slices_.size(); }

  // The parameter whole, in its global shape: every stored box of it copied into place.
  std::vector<float> read(const ParamSpec& spec) {
    auto it = slices_.find(spec.name);
    TS_CHECK(it != slices_.end(), CheckpointError, "checkpoint ", dir_, " stores no tensor ", spec.name);
    std::vector<float> whole(static_cast<size_t>(spec.numel()), 0.0f);
    int64_t covered = 0;
    const int64_t cols = spec.shape.size() == 2 ? spec.shape[1] : spec.numel();
    for (const auto& [s, t] : it->second) {
      const checkpoint::TensorSlice& slice = manifest_.shards(s).tensors(t);
      const std::vector<int64_t> global(slice.global_shape().begin(), slice.global_shape().end());
      TS_CHECK(global == spec.shape && slice.offset_size() == static_cast<int>(spec.shape.size()) &&
                   slice.count_size() == slice.offset_size(),
               CheckpointError, "checkpoint ", dir_, ": ", spec.name,
               " is stored with another shape than its config's");
      Box box;
      box.offset.assign(slice.offset().size(), 0);
      box.count.assign(slice.count().begin(), slice.count().end());
      MemoryRuns runs;
      if (spec.shape.size() == 2) {
        runs.start = slice.offset(0) * cols + slice.offset(1);
        runs.rows = slice.count(0);
        runs.cols = slice.count(1);
        runs.stride = cols;
      } else {
        runs.start = slice.offset(0);
        runs.rows = 1;
        runs.cols = slice.count(0);
        runs.stride = slice.count(0);
      }
      TS_CHECK(runs.start + (runs.rows - 1) * runs.stride + runs.cols <= spec.numel(), CheckpointError, "checkpoint ",
               dir_, ": a stored box of ", spec.name, " lies outside the tensor");
      reader(s).read(slice, box, whole.data(), spec.numel(), runs);
      covered += box.numel();
    }
    TS_CHECK(covered == spec.numel(), CheckpointError, "checkpoint ", dir_, ": the stored boxes of ", spec.name,
             " hold ", covered, " values, the tensor has ", spec.numel());
    return whole;
  }

 private:
  ShardReader& reader(int shard) {
    auto& r = readers_[shard];
    if (!r) r = std::make_unique<ShardReader>((fs::path(dir_) / manifest_.shards(shard).file().file()).string());
    return *r;
  }

  std::string dir_;
  const checkpoint::Manifest& manifest_;
  std::map<std::string, std::vector<std::pair<int, int>>> slices_;
  std::map<int, std::unique_ptr<ShardReader>> readers_;
};

// The tokenizer to ship: the job's data.tokenizer when it is there and is the one the checkpoint recorded.
std::string tokenizer_to_export(const checkpoint::Manifest& manifest) {
  const std::string path = manifest.config().data().tokenizer();
  if (path.empty()) {
    std::printf("no tokenizer: the checkpoint's job names no data.tokenizer; no tokenizer files written\n");
    return "";
  }
  const std::string problem = regular_file_problem(path);
  if (!problem.empty()) {
    std::printf("warning: the job's tokenizer '%s' %s; no tokenizer files written\n", path.c_str(), problem.c_str());
    return "";
  }
  const uint64_t recorded = manifest.has_data() ? manifest.data().tokenizer_xxh64() : 0;
  if (recorded != 0 && xxh64_file(path) != recorded) {
    std::printf(
        "warning: the tokenizer '%s' is not the one the checkpoint was trained with (XXH64 %s); no "
        "tokenizer files written\n",
        path.c_str(), hex64(recorded).c_str());
    return "";
  }
  return path;
}

// The command line of `tessera export`.
struct ExportFlags {
  CLI::App* app = nullptr;
  std::string checkpoint, format, out, dtype = "f32", max_shard_size;
  bool given(const char* flag) const { return app->count(flag) > 0; }
};

int run_export(const ExportFlags& flags) {
  const std::string& path = flags.checkpoint;
  const std::string& out = flags.out;
  const std::string& format = flags.format;
  TS_CHECK(format == "hf", ConfigError, "tessera export: --format '", format,
           "' is not known; hf (a Hugging Face transformers directory) is");
  HfExportOptions options;
  const std::string& dtype = flags.dtype;
  TS_CHECK(dtype == "f32" || dtype == "bf16", ConfigError, "tessera export: --dtype '", dtype, "' is not f32 or bf16");
  options.dtype = dtype == "f32" ? TensorDType::kF32 : TensorDType::kBF16;
  if (flags.given("--max-shard-size"))
    options.max_shard_bytes = parse_byte_size(flags.max_shard_size, "--max-shard-size");
  check_new_output_dir(out, "tessera export: --out");

  // The checkpoint a resume from PATH would load.
  const ResumeCandidates candidates = resume_candidates(path, "", "tessera export");
  TS_CHECK(!candidates.dirs.empty(), ConfigError, "tessera export: no checkpoint in ", candidates.checkpoints_dir);
  if (!candidates.latest_problem.empty()) std::printf("warning: %s\n", candidates.latest_problem.c_str());
  const CheckpointChoice choice = choose_checkpoint(
      candidates, [](const std::string& dir, checkpoint::Manifest* m) { return verify_checkpoint(dir, m); },
      [](const std::string& dir, const std::vector<std::string>& problems) {
        std::printf("passed over %s:\n", dir.c_str());
        for (const std::string& problem : problems) std::printf("  - %s\n", problem.c_str());
      });
  const checkpoint::Manifest& manifest = choice.manifest;
  const ModelConfig model = model_config_from(manifest.config().model());
  options.tokenizer = tokenizer_to_export(manifest);

  CheckpointTensors tensors(choice.dir, manifest);
  Progress progress("export", {{"tensors", ProgressUnit::kCount, static_cast<int64_t>(tensors.count())},
                               {"", ProgressUnit::kBytes, -1, true}});
  int64_t tensors_read = 0, bytes_read = 0;
  const HfExportResult result = write_hf_directory(
      out, model,
      [&](const ParamSpec& spec) {
        std::vector<float> values = tensors.read(spec);
        bytes_read += static_cast<int64_t>(values.size() * sizeof(float));
        progress.update({++tensors_read, bytes_read});
        return values;
      },
      options);
  progress.finish();
  std::printf("exported %s (step %lld, %s) to %s: %lld tensors, %s in %s, %zu file(s)\n", choice.dir.c_str(),
              static_cast<long long>(manifest.step()), model.arch.c_str(), out.c_str(),
              static_cast<long long>(result.tensors), human_bytes(static_cast<double>(result.tensor_bytes)).c_str(),
              dtype.c_str(), result.weight_files.size());
  return 0;
}

}  // namespace

Command add_export_command(CLI::App& tessera) {
  auto flags = std::make_shared<ExportFlags>();
  CLI::App* app = tessera.add_subcommand(
      "export", "Write a checkpoint's weights as a Hugging Face transformers directory (from_pretrained)");
  flags->app = app;
  app->add_option("--checkpoint", flags->checkpoint,
                  "A checkpoint directory, or a checkpoints or run directory for the checkpoint a resume loads")
      ->type_name("PATH|RUN_DIR")
      ->required();
  app->add_option("--format", flags->format, "The output's format: hf (a Hugging Face transformers directory)")
      ->type_name("hf")
      ->required();
  app->add_option("--out", flags->out, "The new output directory")->type_name("DIR")->required();
  app->add_option("--dtype", flags->dtype, "The weights' type in the safetensors files: f32 or bf16")
      ->type_name("f32|bf16")
      ->capture_default_str();
  app->add_option("--max-shard-size", flags->max_shard_size,
                  "Split the weights into files of at most this size (default 5GB; KB/MB/GB are powers of 1000,\n"
                  "KiB/MiB/GiB of 1024)")
      ->type_name("SIZE");
  Command command;
  command.app = app;
  command.run_single = [flags] { return run_export(*flags); };
  return command;
}

}  // namespace tessera

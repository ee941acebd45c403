// `tessera import (--input FILE.h5 | --hf DIR) --out RUN_DIR [--config FILE.textproto] [--set k=v]...
// [--unset k]...`: turns
// full tensors made elsewhere into a checkpoint at step 0 (RUN_DIR/checkpoints/step_00000000, pointed to by
// `latest`), so that `tessera train --config ... --run-dir RUN_DIR --resume latest` starts from them in any
// layout.
//
// --input: each parameter is looked up in FILE.h5 as init/<name> (a tessera fixture), model/<name> (a Tessera
// checkpoint's model.h5) or <name>, with the names and global shapes of the architecture's param_specs. The
// model shape comes from --config, or from a fixture's own attributes.
// --hf: a Hugging Face directory (model.safetensors, or shards and their index; F32, BF16 or F16 tensors) with
// the architecture's Hugging Face names and layouts (launcher/interop/hf_directory.h). The model shape comes
// from --config, or from its config.json.
// AdamW's moments start at zero. RUN_DIR must be new or empty; every tensor is read and checked before anything
// is written, and the checkpoint appears only by a rename. Single process, no MPI.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/param_spec.h"
#include "launcher/checkpoints/checkpoint.h"
#include "launcher/checkpoints/checkpoint_manifest.h"
#include "launcher/checkpoints/checkpoint_shard.h"
#include "launcher/commands/command_line.h"
#include "launcher/commands/commands.h"
#include "launcher/commands/fixture.h"
#include "launcher/common/config.h"
#include "launcher/common/hdf5_file.h"
#include "launcher/interop/hf_directory.h"
#include "launcher/run/job.h"
#include "models/registry.h"

namespace tessera {

namespace {

namespace fs = std::filesystem;

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// Writes RUN_DIR/checkpoints/step_00000000 holding `values` (whole, per `specs`) and zero moments as one shard
// of layout (1,1,1), and points `latest` at it. Returns the checkpoint's directory.
std::string write_step0_checkpoint(const std::string& run_dir, const config::JobConfig& job,
                                   const std::vector<ParamSpec>& specs, const std::vector<std::vector<float>>& values,
                                   const std::string& created_by) {
  int64_t largest = 0;
  for (const ParamSpec& spec : specs) largest = std::max<int64_t>(largest, spec.numel());
  // Every tensor is one slice; the moments are zeros.
  const std::vector<float> zeros(static_cast<size_t>(largest), 0.0f);
  std::vector<ShardWriteItem> items;
  for (StateKind kind : kStateKinds) {
    for (size_t i = 0; i < specs.size(); ++i) {
      const ParamSpec& spec = specs[i];
      ShardWriteItem item;
      checkpoint::TensorSlice& slice = item.slice;
      slice.set_name(spec.name);
      slice.set_kind(to_proto(kind));
      Box box;
      for (int64_t d : spec.shape) {
        slice.add_global_shape(d);
        slice.add_offset(0);
        slice.add_count(d);
        box.offset.push_back(0);
        box.count.push_back(d);
      }
      slice.set_dataset(slice_dataset_path(kind, spec.name, box));
      item.host = kind == StateKind::kModel ? values[i].data() : zeros.data();
      item.runs.start = 0;
      item.runs.rows = 1;
      item.runs.cols = spec.numel();
      item.runs.stride = spec.numel();
      items.push_back(std::move(item));
    }
  }

  const std::string checkpoints_dir = checkpoints_dir_of(run_dir);
  const std::string final_dir = (fs::path(checkpoints_dir) / step_dir_name(0)).string();
  TS_CHECK(!fs::exists(final_dir), ConfigError, "tessera import: '", final_dir,
           "' exists already; import into a new run directory (--out)");
  const std::string tmp_dir = final_dir + ".tmp-import";
  std::error_code error;
  fs::remove_all(tmp_dir, error);
  fs::create_directories(tmp_dir, error);
  TS_CHECK(!error, CheckpointError, "cannot create '", tmp_dir, "': ", error.message());

  checkpoint::Manifest manifest;
  manifest.set_format_version(kManifestFormatVersion);
  manifest.set_step(0);
  manifest.set_consumed_samples(0);
  manifest.set_optimizer_steps(0);
  *manifest.mutable_config() = job;
  checkpoint::Layout* layout = manifest.mutable_layout();
  layout->set_tp(1);
  layout->set_pp(1);
  layout->set_dp(1);
  layout->set_zero_stage(0);
  layout->set_world_size(1);
  *manifest.mutable_model() = model_shape(job.model());
  manifest.set_created_by(created_by);
  const std::string shard_name = shard_file_name(0);
  checkpoint::Shard* shard = manifest.add_shards();
  *shard = write_shard_file((fs::path(tmp_dir) / shard_name).string(), shard_name, items, 0);
  shard->set_world_rank(0);
  shard->set_tp_rank(0);
  shard->set_pp_rank(0);
  shard->set_dp_rank(0);
  return publish_checkpoint(tmp_dir, checkpoints_dir, manifest);
}

// A job whose model is `model` (as a Hugging Face config.json describes it), recorded in the manifest; training
// gives its own config.
config::JobConfig job_for_model(const ModelConfig& model) {
  config::JobConfig job;
  job.set_name("import");
  config::ModelConfig* m = job.mutable_model();
  std::string arch = model.arch;
  std::transform(arch.begin(), arch.end(), arch.begin(), [](unsigned char c) { return std::toupper(c); });
  config::Arch arch_value;
  TS_ASSERT(config::Arch_Parse(arch, &arch_value), "architecture ", model.arch, " has no config.proto name");
  m->set_arch(arch_value);
  m->set_vocab_size(model.vocab_size);
  m->set_n_layer(model.n_layer);
  m->set_n_head(model.n_head);
  m->set_n_embd(model.n_embd);
  m->set_max_seq_len(model.max_seq_len);
  m->set_norm_eps(model.norm_eps);
  m->set_n_kv_head(model.n_kv_head);
  m->set_ffn_hidden(model.ffn_hidden);
  m->set_rope_theta(model.rope_theta);
  m->set_tie_embeddings(model.tie_embeddings);
  job.mutable_train()->set_steps(1);
  job.mutable_train()->set_global_batch(1);
  job.mutable_train()->set_seq_len(model.max_seq_len);
  job.mutable_optimizer()->set_warmup_steps(0);
  job.mutable_data()->set_mock(true);
  return job;
}

void print_next_step(const std::string& run_dir) {
  std::printf("train from them: tessera train --config CONFIG --run-dir %s --resume latest\n", run_dir.c_str());
}

// The command line of `tessera import`.
struct ImportFlags {
  CLI::App* app = nullptr;
  std::string input, hf, out, config;
  ConfigOverrides overrides;
  bool given(const char* flag) const { return app->count(flag) > 0; }
};

// The job of the imported model: --config with the overrides, or `made` (from the input's own description) with
// them.
config::JobConfig import_job(const ImportFlags& flags, config::JobConfig made) {
  std::vector<std::string> notices;
  if (flags.given("--config")) {
    made = load_job_config(flags.config, flags.overrides, &notices);
  } else {
    notices = apply_overrides(made, flags.overrides);
    validate_job_config(made);
  }
  print_notices(notices, /*lead=*/true);
  return made;
}

// --input FILE.h5
int import_h5(const ImportFlags& flags, const std::string& run_dir) {
  const std::string& input = flags.input;
  config::JobConfig made;
  if (!flags.given("--config")) {
    H5Reader probe(input);
    TS_CHECK(probe.has_attribute("format") && probe.attribute_string("format") == "tessera-fixture-v1", ConfigError,
             "tessera import: '", input, "' does not say the model's shape (it is not a tessera fixture); give the ",
             "job with --config FILE.textproto");
    made = fixture_job_config(load_fixture(input));
  }
  const config::JobConfig job = import_job(flags, made);
  const ModelConfig model = model_config_from(job.model());

  // Every parameter whole, from the input file.
  H5Reader file(input);
  const std::vector<ParamSpec> specs = param_specs(model);
  std::vector<std::vector<float>> values;
  for (const ParamSpec& spec : specs) {
    std::string found;
    for (const std::string& candidate : {"init/" + spec.name, "model/" + spec.name, spec.name}) {
      if (file.has_dataset(candidate)) {
        found = candidate;
        break;
      }
    }
    TS_CHECK(!found.empty(), CheckpointError, "tessera import: '", input, "' has no tensor for parameter ", spec.name,
             " (looked for init/", spec.name, ", model/", spec.name, " and ", spec.name, ")");
    std::vector<int64_t> shape;
    values.push_back(file.read_f32(found, &shape));
    TS_CHECK(shape == spec.shape, CheckpointError, "tessera import: '", input, "' dataset ", found, " has shape ",
             shape_text(shape), ", the model of the config expects ", shape_text(spec.shape),
             ": give the config the weights were made for");
  }
  const std::string published = write_step0_checkpoint(run_dir, job, specs, values, "tessera import " + input);
  std::printf("imported %zu tensors (%lld parameters) from %s into %s\n", specs.size(),
              static_cast<long long>(num_parameters(model)), input.c_str(), published.c_str());
  print_next_step(run_dir);
  return 0;
}

// --hf DIR
int import_hf(const ImportFlags& flags, const std::string& run_dir) {
  const std::string& dir = flags.hf;
  const config::JobConfig job =
      import_job(flags, flags.given("--config") ? config::JobConfig() : job_for_model(read_hf_model_config(dir)));
  const ModelConfig model = model_config_from(job.model());
  const std::vector<ParamSpec> specs = param_specs(model);
  const HfWeights weights = read_hf_weights(dir, model);
  if (!weights.ignored.empty()) {
    std::printf("ignored %zu tensor(s) the model has no parameter for:", weights.ignored.size());
    for (size_t i = 0; i < weights.ignored.size() && i < 8; ++i) std::printf(" %s", weights.ignored[i].c_str());
    std::printf("%s\n", weights.ignored.size() > 8 ? " ..." : "");
  }
  const std::string published =
      write_step0_checkpoint(run_dir, job, specs, weights.values, "tessera import --hf " + dir);
  std::printf("imported %zu tensors (%lld parameters, %s) from %s (%zu file(s)) into %s\n", specs.size(),
              static_cast<long long>(num_parameters(model)), model.arch.c_str(), dir.c_str(), weights.files.size(),
              published.c_str());
  print_next_step(run_dir);
  return 0;
}

int run_import(const ImportFlags& flags) {
  TS_CHECK(flags.given("--input") != flags.given("--hf"), ConfigError,
           "tessera import: give the weights with either --input FILE.h5 or --hf DIR (a Hugging Face directory)");
  const std::string& run_dir = flags.out;
  check_new_output_dir(run_dir, "tessera import: --out");
  return flags.given("--hf") ? import_hf(flags, run_dir) : import_h5(flags, run_dir);
}

}  // namespace

Command add_import_command(CLI::App& tessera) {
  auto flags = std::make_shared<ImportFlags>();
  CLI::App* app = tessera.add_subcommand(
      "import",
      "Turn full tensors made elsewhere (an HDF5 file, or a Hugging Face directory with config.json and\n"
      "safetensors) into a step-0 checkpoint to train from");
  flags->app = app;
  app->add_option("--input", flags->input,
                  "An HDF5 file of the model's tensors (a tessera fixture, a checkpoint's model.h5, or <name>)")
      ->type_name("FILE.h5");
  app->add_option("--hf", flags->hf, "A Hugging Face directory (config.json, model.safetensors or its shards)")
      ->type_name("DIR");
  app->add_option("--out", flags->out, "The new run directory (new or empty)")->type_name("RUN_DIR")->required();
  app->add_option("--config", flags->config, "The job to record; default: the input's own model description")
      ->type_name("FILE.textproto");
  add_override_options(app, &flags->overrides);
  Command command;
  command.app = app;
  command.run_single = [flags] { return run_import(*flags); };
  return command;
}

}  // namespace tessera

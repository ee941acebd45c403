// `tessera inspect PATH [--slices]`: what a checkpoint holds — step, data position, layout, model shape, data
// identity, files with sizes and checksums, tensors — and whether it is complete and intact (a manifest whose
// own checksum matches, slices that tile every tensor, every file present with its recorded size and XXH64).
// PATH is a checkpoint directory, or a checkpoints or run directory: then the checkpoint `train --resume PATH`
// would load (the one `latest` names, or the newest complete one when that is damaged), chosen by the same
// code (choose_checkpoint), with every checkpoint passed over listed and why. Single process, no MPI. Exit 0
// when a resume from PATH would load a checkpoint (damage to model.h5 or manifest.textproto, which loading
// does not need, is reported), 1 when it would fail.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/check.h"
#include "launcher/checkpoints/checkpoint_layout.h"
#include "launcher/checkpoints/checkpoint_manifest.h"
#include "launcher/commands/commands.h"
#include "launcher/common/checksum.h"
#include "launcher/common/human_format.h"

namespace tessera {

namespace {

std::string shape_text(const google::protobuf::RepeatedField<int64_t>& shape) {
  std::string out = "[";
  for (int i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

std::string utc_time(int64_t unix_s) {
  const std::time_t t = static_cast<std::time_t>(unix_s);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%d %H:%M:%S UTC", &tm);
  return text;
}

void print_manifest(const checkpoint::Manifest& m, bool slices) {
  std::printf("  step %lld (%lld samples consumed, %lld optimizer updates), made by %s at %s\n",
              static_cast<long long>(m.step()), static_cast<long long>(m.consumed_samples()),
              static_cast<long long>(m.optimizer_steps()), m.created_by().c_str(),
              utc_time(m.created_unix_s()).c_str());
  const checkpoint::Layout& l = m.layout();
  std::printf("  layout: tp=%d pp=%d dp=%d zero_stage=%d on %d rank(s)\n", l.tp(), l.pp(), l.dp(), l.zero_stage(),
              l.world_size());
  const checkpoint::ModelShape& s = m.model();
  std::printf("  model: %s, vocab %d, %d layers, %d heads", s.arch().c_str(), s.vocab_size(), s.n_layer(), s.n_head());
  if (s.has_n_kv_head() && s.n_kv_head() != s.n_head()) std::printf(" (%d kv heads)", s.n_kv_head());
  std::printf(", n_embd %d", s.n_embd());
  if (s.has_ffn_hidden()) std::printf(", ffn_hidden %d", s.ffn_hidden());
  if (s.has_rope_theta()) std::printf(", rope_theta %g", s.rope_theta());
  if (s.has_tie_embeddings()) std::printf(", %s", s.tie_embeddings() ? "tied embedding" : "untied output head");
  std::printf(", max_seq_len %d\n", s.max_seq_len());
  if (m.has_data()) {
    const checkpoint::DataIdentity& d = m.data();
    if (d.mock()) {
      std::printf("  data: generated tokens (data.mock)");
    } else {
      std::printf("  data: '%s' (%lld tokens, %lld documents)", d.train_prefix().c_str(),
                  static_cast<long long>(d.num_tokens()), static_cast<long long>(d.num_documents()));
    }
    std::printf(", seq_len %d, global batch %d, seed %llu\n", d.seq_len(), d.global_batch(),
                static_cast<unsigned long long>(d.seed()));
    if (!d.tokenizer().empty()) {
      std::printf("  tokenizer: '%s' (XXH64 %s)\n", d.tokenizer().c_str(), hex64(d.tokenizer_xxh64()).c_str());
    }
  } else {
    std::printf("  data: none recorded (imported weights)\n");
  }

  uint64_t total = 0;
  for (const checkpoint::FileEntry& f : manifest_files(m)) total += f.size_bytes();
  std::printf("  files (%zu, %s):\n", manifest_files(m).size(), human_bytes(static_cast<double>(total)).c_str());
  for (const checkpoint::Shard& shard : m.shards()) {
    std::printf("    %-14s %10s  xxh64 %s  rank %d (tp %d, pp %d, dp %d), %d slice(s)\n", shard.file().file().c_str(),
                human_bytes(static_cast<double>(shard.file().size_bytes())).c_str(),
                hex64(shard.file().xxh64()).c_str(), shard.world_rank(), shard.tp_rank(), shard.pp_rank(),
                shard.dp_rank(), shard.tensors_size());
    if (!slices) continue;
    for (const checkpoint::TensorSlice& t : shard.tensors()) {
      std::printf("      %s  offset %s count %s\n", t.dataset().c_str(), shape_text(t.offset()).c_str(),
                  shape_text(t.count()).c_str());
    }
  }
  if (m.has_virtual_file()) {
    std::printf("    %-14s %10s  xxh64 %s  virtual datasets: every tensor whole\n", m.virtual_file().file().c_str(),
                human_bytes(static_cast<double>(m.virtual_file().size_bytes())).c_str(),
                hex64(m.virtual_file().xxh64()).c_str());
  }

  // One line per global tensor, in the order first seen.
  std::vector<std::pair<int, std::string>> order;
  std::map<std::pair<int, std::string>, std::pair<const checkpoint::TensorSlice*, int>> tensors;
  int64_t values = 0;
  for (const checkpoint::Shard& shard : m.shards()) {
    for (const checkpoint::TensorSlice& t : shard.tensors()) {
      const std::pair<int, std::string> key{static_cast<int>(t.kind()), t.name()};
      auto [it, inserted] = tensors.emplace(key, std::make_pair(&t, 0));
      if (inserted) order.push_back(key);
      ++it->second.second;
      int64_t n = 1;
      for (int64_t c : t.count()) n *= c;
      values += n;
    }
  }
  std::printf("  tensors (%zu, %lld values, float32):\n", order.size(), static_cast<long long>(values));
  for (const auto& key : order) {
    const auto& [slice, count] = tensors.at(key);
    const std::string path = std::string(state_kind_group(from_proto(slice->kind()))) + "/" + slice->name();
    std::printf("    %-36s %-14s %d slice(s)\n", path.c_str(), shape_text(slice->global_shape()).c_str(), count);
  }
}

// The command line of `tessera inspect`.
struct InspectFlags {
  std::string path;
  bool slices = false;
};

int run_inspect(const InspectFlags& flags) {
  const bool slices = flags.slices;
  const ResumeCandidates candidates = resume_candidates(flags.path, "", "tessera inspect");
  TS_CHECK(!candidates.dirs.empty(), ConfigError, "tessera inspect: no checkpoint in ", candidates.checkpoints_dir);
  if (!candidates.latest_problem.empty()) {
    std::printf("warning: %s\n  a resume uses the newest complete checkpoint instead\n",
                candidates.latest_problem.c_str());
  }
  // The same choice as `train --resume` makes (choose_checkpoint), with every check run in this process.
  const CheckpointVerifier verify = [&](const std::string& dir, checkpoint::Manifest* manifest) {
    std::vector<std::string> problems = verify_checkpoint(dir, manifest);
    if (!problems.empty()) {
      std::printf("checkpoint %s\n", dir.c_str());
      try {
        print_manifest(read_manifest(dir), slices);
      } catch (const CheckpointError&) {
        // The problems say why.
      }
      std::printf("  status: NOT usable:\n");
      for (const std::string& problem : problems) std::printf("    - %s\n", problem.c_str());
    }
    return problems;
  };
  CheckpointChoice choice;
  try {
    choice = choose_checkpoint(candidates, verify, nullptr);
  } catch (const CheckpointError&) {
    if (candidates.may_fall_back) {
      std::printf("no usable checkpoint in %s: a resume from it fails\n", candidates.checkpoints_dir.c_str());
    }
    return 1;
  }
  std::printf("checkpoint %s%s\n", choice.dir.c_str(),
              choice.rejected.empty() && candidates.latest_problem.empty()
                  ? ""
                  : " (the newest complete checkpoint: what --resume loads)");
  print_manifest(choice.manifest, slices);
  const std::vector<std::string> warnings = auxiliary_file_problems(choice.dir, choice.manifest);
  if (choice.manifest.format_version() == kLegacyManifestFormatVersion) {
    std::printf("  note: checkpoint format 1: its manifest has no checksum, so damage to it cannot be detected\n");
  }
  if (warnings.empty()) {
    std::printf("  status: complete and intact (every file has its recorded size and XXH64)\n");
  } else {
    std::printf("  status: loads (every shard intact), but files only tools read are damaged:\n");
    for (const std::string& warning : warnings) std::printf("    - %s\n", warning.c_str());
  }
  return 0;
}

}  // namespace

Command add_inspect_command(CLI::App& tessera) {
  auto flags = std::make_shared<InspectFlags>();
  CLI::App* app = tessera.add_subcommand(
      "inspect",
      "Show a checkpoint (step, layout, files, tensors) and check that it is complete and intact;\n"
      "exit 0 when a resume from PATH would load a checkpoint, 1 when it would fail");
  app->add_option("PATH", flags->path,
                  "A checkpoint directory (e.g. runs/x/checkpoints/step_00000100), or a checkpoints or run\n"
                  "directory for the checkpoint a resume would load")
      ->required();
  app->add_flag("--slices", flags->slices, "Also list every shard's slices (the offset and count of each)");
  Command command;
  command.app = app;
  command.run_single = [flags] { return run_inspect(*flags); };
  return command;
}

}  // namespace tessera

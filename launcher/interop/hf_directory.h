// A Hugging Face `from_pretrained` directory, written from and read into Tessera's parameters:
//
//   DIR/config.json                       the architecture's shape (models/<arch>/<arch>_hf.cc), token ids, dtype
//   DIR/generation_config.json            bos and eos token ids
//   DIR/model.safetensors                 every weight with Hugging Face's name and layout; or, above the shard
//   DIR/model-00001-of-0000N.safetensors  size limit, N files and
//   DIR/model.safetensors.index.json      {"metadata": {"total_size": bytes}, "weight_map": {name: file}}
//   DIR/tokenizer.model                   the SentencePiece model, with tokenizer_config.json and
//                                         special_tokens_map.json (LlamaTokenizer), when there is one
//
// Names and layouts come from the architecture's HfFormat (models/hf_format.h), reached through the registry:
// nothing here names a parameter. Single process, no MPI, no HDF5.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/model_config.h"
#include "core/param_spec.h"
#include "launcher/interop/safetensors.h"

namespace tessera {

inline constexpr uint64_t kDefaultMaxShardBytes = 5'000'000'000;  // Hugging Face's default "5GB"

struct HfExportOptions {
  TensorDType dtype = TensorDType::kF32;  // kF32 or kBF16
  uint64_t max_shard_bytes = kDefaultMaxShardBytes;
  // A SentencePiece model to ship as tokenizer.model, or "" for none.
  std::string tokenizer;
};

// One whole parameter in Tessera's layout (its spec's global shape, row-major, no vocabulary padding). Called
// once per parameter, in param_specs order, so that only one tensor is in memory at a time.
using ParamValues = std::function<std::vector<float>(const ParamSpec& spec)>;

struct HfExportResult {
  std::vector<std::string> weight_files;  // the safetensors files, in order
  int64_t tensors = 0;
  uint64_t tensor_bytes = 0;  // the index's total_size
};

// Writes the directory out_dir for a model of `config`. out_dir must not exist or be empty (ConfigError
// otherwise); the files are written into a temporary sibling directory that is renamed to out_dir at the end,
// so a failure leaves nothing behind. Tensors go into model.safetensors, or into several files of at most
// max_shard_bytes each (a tensor larger than that alone in its file) with an index. Throws DataError for a
// tokenizer that cannot be read, CheckpointError when a file cannot be written.
HfExportResult write_hf_directory(const std::string& out_dir, const ModelConfig& config, const ParamValues& values,
                                  const HfExportOptions& options);

// The model the directory's config.json describes (its model_type picks the architecture). Throws ConfigError
// naming the file for a missing or malformed config.json, an unknown model_type, or a model Tessera cannot
// build.
ModelConfig read_hf_model_config(const std::string& dir);

struct HfWeights {
  std::vector<std::vector<float>> values;  // per param_specs(config), in Tessera's layout
  std::vector<std::string> ignored;        // tensors of the files that are no parameter of config
  std::vector<std::string> files;          // the safetensors files read
};
// Reads every parameter of `config` from dir's model.safetensors, or from the files its
// model.safetensors.index.json lists (F32, BF16 or F16, converted to f32). Throws DataError naming the file
// for a malformed header or index, a missing tensor, or one whose shape is not the one config gives it.
HfWeights read_hf_weights(const std::string& dir, const ModelConfig& config);

// A size in bytes: "5GB" (10^9), "500MB", "64KB", "2GiB" (2^30), "1MiB", "100" or "100B". Throws ConfigError
// naming `flag` for anything else or for 0.
uint64_t parse_byte_size(const std::string& text, const std::string& flag);

// Throws ConfigError (starting with `what`, e.g. "tessera export: --out") when path exists and is not an empty
// directory.
void check_new_output_dir(const std::string& path, const std::string& what);

}  // namespace tessera

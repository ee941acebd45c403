// How an architecture looks in Hugging Face transformers: the names and layouts of its weights in a
// `from_pretrained` directory (model.safetensors) and the entries of its config.json. Each architecture
// describes itself in its own folder (models/gpt2/gpt2_hf.cc, models/llama/llama_hf.cc) and is reached through
// ModelArchitecture::hf; launcher/interop/ reads and writes the files and names no parameter.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "core/model_config.h"

namespace tessera {

// One Tessera parameter in Hugging Face's state dict.
struct HfTensorName {
  std::string param;    // Tessera's global name: "h.0.attn.qkv.weight"
  std::string hf_name;  // "transformer.h.0.attn.c_attn.weight"
  // Hugging Face stores this 2-d tensor as [in, out] (GPT-2's Conv1D), the transpose of Tessera's [out, in].
  bool transposed = false;
};

// A value of config.json's top level: null, a scalar, or an array or object (whose contents architectures
// do not read, only whether one is there).
struct HfCompound {
  bool operator==(const HfCompound&) const = default;
};
using HfValue = std::variant<std::monostate, bool, int64_t, double, std::string, HfCompound>;
struct HfConfigEntry {
  std::string key;
  HfValue value;
};
// config.json's top level by key, as read: JSON integers as int64_t, other numbers as double.
using HfConfigValues = std::map<std::string, HfValue>;

struct HfFormat {
  const char* model_type;    // config.json's "model_type": "gpt2"
  const char* architecture;  // its "architectures": ["GPT2LMHeadModel"]
  // Every parameter of the architecture's param_specs(config), in that order, with its Hugging Face name and
  // layout. A tied output head has no entry: Hugging Face ties it itself (tie_word_embeddings).
  std::vector<HfTensorName> (*tensor_names)(const ModelConfig& config);
  // config.json's entries that describe the shape (the generic code adds "architectures", "model_type", the
  // token ids and "torch_dtype").
  std::vector<HfConfigEntry> (*config_entries)(const ModelConfig& config);
  // The model config.json describes (arch set; the rest at ModelConfig's defaults). Throws ConfigError naming
  // `where` (the file) for a missing or mistyped entry, or a model Tessera cannot build (another activation,
  // biases it has no place for, scaled RoPE).
  ModelConfig (*model_config)(const HfConfigValues& values, const std::string& where);
};

// Typed reads of config.json entries for the architectures' model_config. Missing keys take the fallback
// where one is given (a null value counts as missing); otherwise, or for a value of another type, ConfigError
// naming `where` and the key. hf_number accepts integers too.
int64_t hf_int(const HfConfigValues& values, const std::string& key, const std::string& where);
int64_t hf_int(const HfConfigValues& values, const std::string& key, const std::string& where, int64_t fallback);
double hf_number(const HfConfigValues& values, const std::string& key, const std::string& where, double fallback);
bool hf_bool(const HfConfigValues& values, const std::string& key, const std::string& where, bool fallback);
std::string hf_string(const HfConfigValues& values, const std::string& key, const std::string& where,
                      const std::string& fallback);
// Whether key is present with a value other than null.
bool hf_has(const HfConfigValues& values, const std::string& key);
// An int that must fit the int fields of ModelConfig and be positive.
int hf_positive_int(const HfConfigValues& values, const std::string& key, const std::string& where);

// The decimal a person wrote for a float (1e-5f is 1e-05, not 9.99999974738e-06), as a double, so that
// config.json reads as the config did.
double float_as_decimal(float value);

}  // namespace tessera

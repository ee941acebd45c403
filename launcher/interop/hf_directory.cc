// Hugging Face directories: config.json from the architecture's HfFormat, safetensors shards, the shard index,
// the tokenizer files; and back.
#include "launcher/interop/hf_directory.h"

#include <fmt/format.h>
#include <sentencepiece_processor.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <sstream>

#include "core/check.h"
#include "launcher/common/json_io.h"
#include "launcher/common/mapped_file.h"
#include "models/registry.h"

namespace tessera {

namespace {

namespace fs = std::filesystem;

constexpr char kConfigFile[] = "config.json";
constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

Json to_json(const HfValue& value) {
  if (std::holds_alternative<bool>(value)) return Json(std::get<bool>(value));
  if (std::holds_alternative<int64_t>(value)) return Json(std::get<int64_t>(value));
  if (std::holds_alternative<double>(value)) return Json(std::get<double>(value));
  if (std::holds_alternative<std::string>(value)) return Json(std::get<std::string>(value));
  TS_ASSERT(std::holds_alternative<std::monostate>(value), "config.json entries are scalars");
  return Json(nullptr);
}

HfValue to_hf_value(const Json& json) {
  switch (json.type()) {
    case Json::value_t::boolean:
      return json.get<bool>();
    case Json::value_t::number_integer:
      return json.get<int64_t>();
    case Json::value_t::number_unsigned:  // beyond int64: kept as the double it is closest to
      if (json.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return json.get<int64_t>();
      return json.get<double>();
    case Json::value_t::number_float:
      return json.get<double>();
    case Json::value_t::string:
      return json.get<std::string>();
    case Json::value_t::array:
    case Json::value_t::object:
      return HfCompound{};
    default:  // null
      return std::monostate{};
  }
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  TS_CHECK(out.good(), CheckpointError, "cannot write '", path.string(), "'");
}

std::string read_text(const std::string& path, const std::string& what) {
  TS_CHECK(fs::is_regular_file(path), DataError, what, " '", path, "' is missing or not a regular file");
  const MappedFile file = MappedFile::open(path);
  return std::string(reinterpret_cast<const char*>(file.data()), file.size());
}

// Y = X^T for a row-major [rows, cols] matrix.
std::vector<float> transposed(const std::vector<float>& x, int64_t rows, int64_t cols) {
  std::vector<float> y(x.size());
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) y[static_cast<size_t>(j * rows + i)] = x[static_cast<size_t>(i * cols + j)];
  }
  return y;
}

// The HF names of every parameter of config, checked against its param_specs.
std::vector<HfTensorName> tensor_names(const ModelConfig& config, const std::vector<ParamSpec>& specs) {
  const ModelArchitecture& arch = model_architecture(config.arch);
  TS_CHECK(arch.hf != nullptr, ConfigError, "architecture ", config.arch, " has no Hugging Face format");
  std::vector<HfTensorName> names = arch.hf->tensor_names(config);
  TS_ASSERT(names.size() == specs.size(), config.arch, "'s Hugging Face names do not cover its parameters");
  for (size_t i = 0; i < names.size(); ++i) {
    TS_ASSERT(names[i].param == specs[i].name, config.arch, ": Hugging Face name for ", specs[i].name, " out of order");
    TS_ASSERT(!names[i].transposed || specs[i].shape.size() == 2, "only matrices are transposed");
  }
  return names;
}

std::vector<int64_t> hf_shape(const ParamSpec& spec, const HfTensorName& name) {
  if (!name.transposed) return spec.shape;
  return {spec.shape[1], spec.shape[0]};
}

// The special tokens of a SentencePiece model.
struct SpecialTokens {
  int bos_id = -1, eos_id = -1, unk_id = -1;
  std::string bos, eos, unk;
};

SpecialTokens special_tokens(const std::string& path) {
  sentencepiece::SentencePieceProcessor processor;
  const auto status = processor.Load(path);
  TS_CHECK(status.ok(), DataError, "tokenizer '", path, "' is not a SentencePiece model: ", status.ToString());
  SpecialTokens t;
  t.bos_id = processor.bos_id();
  t.eos_id = processor.eos_id();
  t.unk_id = processor.unk_id();
  if (t.bos_id >= 0) t.bos = processor.IdToPiece(t.bos_id);
  if (t.eos_id >= 0) t.eos = processor.IdToPiece(t.eos_id);
  if (t.unk_id >= 0) t.unk = processor.IdToPiece(t.unk_id);
  return t;
}

Json token_id(int id) { return id >= 0 ? Json(id) : Json(nullptr); }
Json token_text(const std::string& piece) { return piece.empty() ? Json(nullptr) : Json(piece); }

// Removes a temporary directory unless released.
class TempDirGuard {
 public:
  explicit TempDirGuard(fs::path path) : path_(std::move(path)) {}
  ~TempDirGuard() {
    if (path_.empty()) return;
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  void release() { path_.clear(); }

 private:
  fs::path path_;
};

}  // namespace

void check_new_output_dir(const std::string& path, const std::string& what) {
  std::error_code error;
  if (!fs::exists(fs::symlink_status(path, error))) return;
  TS_CHECK(fs::is_directory(path, error) && fs::is_empty(path, error), ConfigError, what, " '", path,
           "' exists and is not an empty directory; give a new one");
}

uint64_t parse_byte_size(const std::string& text, const std::string& flag) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  std::string unit = text.substr(digits);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::map<std::string, uint64_t> units = {{"", 1},
                                                 {"B", 1},
                                                 {"KB", 1000},
                                                 {"MB", 1000'000},
                                                 {"GB", 1000'000'000},
                                                 {"KIB", 1ull << 10},
                                                 {"MIB", 1ull << 20},
                                                 {"GIB", 1ull << 30}};
  const auto it = units.find(unit);
  TS_CHECK(digits > 0 && digits <= 12 && it != units.end(), ConfigError, flag, " '", text,
           "' is not a size: give bytes, or a number with KB, MB, GB (powers of 1000) or KiB, MiB, GiB");
  const uint64_t size = std::stoull(text.substr(0, digits)) * it->second;
  TS_CHECK(size > 0, ConfigError, flag, " must be more than 0 bytes");
  return size;
}

HfExportResult write_hf_directory(const std::string& out_dir, const ModelConfig& config, const ParamValues& values,
                                  const HfExportOptions& options) {
  check_new_output_dir(out_dir, "--out");
  TS_ASSERT(options.dtype == TensorDType::kF32 || options.dtype == TensorDType::kBF16, "export writes F32 or BF16");
  const ModelArchitecture& arch = model_architecture(config.arch);
  const std::vector<ParamSpec> specs = param_specs(config);
  const std::vector<HfTensorName> names = tensor_names(config, specs);
  std::optional<SpecialTokens> tokens;
  if (!options.tokenizer.empty()) tokens = special_tokens(options.tokenizer);

  // Files of at most max_shard_bytes, filled in order (as transformers' save_pretrained does).
  std::vector<std::vector<size_t>> groups;
  uint64_t group_bytes = 0, total_bytes = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const uint64_t bytes = static_cast<uint64_t>(specs[i].numel()) * dtype_bytes(options.dtype);
    if (groups.empty() || (group_bytes > 0 && group_bytes + bytes > options.max_shard_bytes)) {
      groups.emplace_back();
      group_bytes = 0;
    }
    groups.back().push_back(i);
    group_bytes += bytes;
    total_bytes += bytes;
  }

  const fs::path out = fs::absolute(out_dir).lexically_normal();
  const fs::path final_dir = out.filename().empty() ? out.parent_path() : out;
  const fs::path tmp =
      final_dir.parent_path() / (final_dir.filename().string() + ".tmp-export-" + std::to_string(::getpid()));
  std::error_code error;
  fs::remove_all(tmp, error);
  fs::create_directories(tmp, error);
  TS_CHECK(!error, CheckpointError, "cannot create '", tmp.string(), "': ", error.message());
  TempDirGuard guard(tmp);

  HfExportResult result;
  result.tensors = static_cast<int64_t>(specs.size());
  result.tensor_bytes = total_bytes;
  Json weight_map = Json::object();
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::string file =
        groups.size() == 1 ? kSingleFile : fmt::format("model-{:05}-of-{:05}.safetensors", g + 1, groups.size());
    std::vector<SafetensorsEntry> entries;
    for (size_t i : groups[g]) {
      SafetensorsEntry entry;
      entry.name = names[i].hf_name;
      entry.dtype = options.dtype;
      entry.shape = hf_shape(specs[i], names[i]);
      entries.push_back(std::move(entry));
      weight_map[names[i].hf_name] = file;
    }
    write_safetensors((tmp / file).string(), entries,
                      [&](size_t k) {
                        const size_t i = groups[g][k];
                        std::vector<float> v = values(specs[i]);
                        TS_ASSERT(static_cast<int64_t>(v.size()) == specs[i].numel(), specs[i].name,
                                  " has the wrong size");
                        return names[i].transposed ? transposed(v, specs[i].shape[0], specs[i].shape[1]) : v;
                      },
                      {{"format", "pt"}});
    result.weight_files.push_back(file);
  }
  if (groups.size() > 1) {
    Json index = Json::object();
    index["metadata"] = {{"total_size", static_cast<int64_t>(total_bytes)}};
    index["weight_map"] = std::move(weight_map);
    write_text(tmp / kIndexFile, dump_json(index, 2) + "\n");
  }

  const char* torch_dtype = options.dtype == TensorDType::kF32 ? "float32" : "bfloat16";
  Json model_config = Json::object();
  model_config["architectures"] = Json::array({arch.hf->architecture});
  model_config["model_type"] = arch.hf->model_type;
  for (const HfConfigEntry& entry : arch.hf->config_entries(config)) model_config[entry.key] = to_json(entry.value);
  model_config["bos_token_id"] = token_id(tokens ? tokens->bos_id : -1);
  model_config["eos_token_id"] = token_id(tokens ? tokens->eos_id : -1);
  model_config["torch_dtype"] = torch_dtype;
  write_text(tmp / kConfigFile, dump_json(model_config, 2) + "\n");

  Json generation = Json::object();
  generation["bos_token_id"] = token_id(tokens ? tokens->bos_id : -1);
  generation["eos_token_id"] = token_id(tokens ? tokens->eos_id : -1);
  write_text(tmp / "generation_config.json", dump_json(generation, 2) + "\n");

  if (tokens) {
    fs::copy_file(options.tokenizer, tmp / "tokenizer.model", error);
    TS_CHECK(!error, CheckpointError, "cannot copy the tokenizer '", options.tokenizer, "': ", error.message());
    // Tessera's data has no bos token in front of documents (prepare ends each with eos): add_bos_token false.
    Json tokenizer_config = Json::object();
    tokenizer_config["tokenizer_class"] = "LlamaTokenizer";
    tokenizer_config["bos_token"] = token_text(tokens->bos);
    tokenizer_config["eos_token"] = token_text(tokens->eos);
    tokenizer_config["unk_token"] = token_text(tokens->unk);
    tokenizer_config["pad_token"] = nullptr;
    tokenizer_config["add_bos_token"] = false;
    tokenizer_config["add_eos_token"] = false;
    tokenizer_config["legacy"] = true;
    tokenizer_config["model_max_length"] = config.max_seq_len;
    tokenizer_config["clean_up_tokenization_spaces"] = false;
    write_text(tmp / "tokenizer_config.json", dump_json(tokenizer_config, 2) + "\n");
    Json special = Json::object();
    if (!tokens->bos.empty()) special["bos_token"] = tokens->bos;
    if (!tokens->eos.empty()) special["eos_token"] = tokens->eos;
    if (!tokens->unk.empty()) special["unk_token"] = tokens->unk;
    write_text(tmp / "special_tokens_map.json", dump_json(special, 2) + "\n");
  }

  // rename(2) replaces an empty out_dir; anything else was refused above (and a race fails here).
  fs::rename(tmp, final_dir, error);
  TS_CHECK(!error, CheckpointError, "cannot rename '", tmp.string(), "' to '", final_dir.string(),
           "': ", error.message());
  guard.release();
  return result;
}

ModelConfig read_hf_model_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / kConfigFile).string();
  TS_CHECK(fs::is_directory(dir), ConfigError, "--hf '", dir, "' is not a directory");
  TS_CHECK(fs::is_regular_file(path), ConfigError, "'", path,
           "' is missing: a Hugging Face model directory has a config.json");
  Json json;
  try {
    json = parse_json(read_text(path, "config"), path);
  } catch (const DataError& e) {
    throw ConfigError(e.what());
  }
  TS_CHECK(json.is_object(), ConfigError, path, ": not a JSON object");
  const auto model_type = json.find("model_type");
  TS_CHECK(model_type != json.end() && model_type->is_string(), ConfigError, path,
           ": no \"model_type\" string (gpt2 or llama)");
  const ModelArchitecture& arch = hf_model_architecture(model_type->get<std::string>(), path);
  HfConfigValues values;
  for (const auto& [key, value] : json.items()) values[key] = to_hf_value(value);
  return arch.hf->model_config(values, path);
}

HfWeights read_hf_weights(const std::string& dir, const ModelConfig& config) {
  const fs::path root(dir);
  TS_CHECK(fs::is_directory(root), DataError, "--hf '", dir, "' is not a directory");
  // Which file holds each tensor.
  std::map<std::string, std::string> file_of;
  const fs::path index_path = root / kIndexFile;
  std::vector<std::string> files;
  const bool has_index = fs::exists(index_path);
  if (has_index) {
    const std::string where = index_path.string();
    const Json index = parse_json(read_text(where, "index"), where);
    const auto map = index.is_object() ? index.find("weight_map") : index.end();
    TS_CHECK(map != index.end() && map->is_object(), DataError, where,
             ": no \"weight_map\" object of tensor names and files");
    for (const auto& [name, value] : map->items()) {
      const std::string file = value.is_string() ? value.get<std::string>() : std::string();
      TS_CHECK(!file.empty() && file.find('/') == std::string::npos && file != "." && file != "..", DataError, where,
               ": the file of tensor \"", name, "\" is not a file name in the directory");
      file_of[name] = file;
      if (std::find(files.begin(), files.end(), file) == files.end()) files.push_back(file);
    }
  } else {
    TS_CHECK(fs::exists(root / kSingleFile), DataError, "'", dir, "' has neither ", kSingleFile, " nor ", kIndexFile);
    files.push_back(kSingleFile);
  }
  // Every file's header is checked before anything is converted.
  std::map<std::string, std::unique_ptr<SafetensorsReader>> readers;
  for (const std::string& file : files) {
    auto reader = std::make_unique<SafetensorsReader>((root / file).string());
    for (const SafetensorsEntry& entry : reader->entries()) {
      if (!has_index) file_of.try_emplace(entry.name, file);
    }
    readers[file] = std::move(reader);
  }

  const std::vector<ParamSpec> specs = param_specs(config);
  const std::vector<HfTensorName> names = tensor_names(config, specs);
  HfWeights weights;
  weights.files = files;
  std::map<std::string, bool> used;
  for (size_t i = 0; i < specs.size(); ++i) {
    const HfTensorName& name = names[i];
    auto it = file_of.find(name.hf_name);
    TS_CHECK(it != file_of.end(), DataError, "'", dir, "' has no tensor \"", name.hf_name, "\" (Tessera's ",
             specs[i].name, ") in ", has_index ? kIndexFile : kSingleFile, ": the model of the config needs it");
    const SafetensorsReader& reader = *readers.at(it->second);
    const SafetensorsEntry* entry = reader.find(name.hf_name);
    TS_CHECK(entry != nullptr, DataError, "safetensors file '", reader.path(), "' has no tensor \"", name.hf_name,
             "\", which ", kIndexFile, " places there");
    const std::vector<int64_t> expected = hf_shape(specs[i], name);
    TS_CHECK(entry->shape == expected, DataError, "safetensors file '", reader.path(), "': tensor \"", name.hf_name,
             "\" has shape ", shape_text(entry->shape), ", the model of the config expects ", shape_text(expected),
             ": give the config the weights were made for");
    std::vector<float> v = reader.read_f32(*entry);
    weights.values.push_back(name.transposed ? transposed(v, expected[0], expected[1]) : std::move(v));
    used[name.hf_name] = true;
  }
  for (const auto& [name, file] : file_of) {
    if (used.count(name) == 0) weights.ignored.push_back(name);
  }
  return weights;
}

}  // namespace tessera

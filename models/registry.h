// The model architectures Tessera trains, by name ("gpt2", "llama"): each one's parameter specs, its Model
// (parallel/model.h) and its shape checks. Adding an architecture is its own folder under models/, its kernels,
// and one line in registry.cc (plus its name in config.proto's Arch enum).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/model_config.h"
#include "core/param_spec.h"
#include "models/arena_plan.h"
#include "models/hf_format.h"
#include "parallel/model.h"
#include "parallel/process_group.h"

namespace tessera {

struct ModelArchitecture {
  const char* name;  // config.arch, lower case: "gpt2"
  // Every parameter, in the architecture's (and its checkpoints' and fixtures') order.
  std::vector<ParamSpec> (*param_specs)(const ModelConfig& config);
  // One rank's stage shard (see Gpt2Model for the arguments).
  std::unique_ptr<Model> (*create)(const ModelConfig& config, Backend& backend, ProcessGroup& tp, StageRange stage,
                                   int micro_batch, int seq_len, int slots, ModelUse use);
  // What is wrong with this shape for tp ranks of tensor parallelism, one line each ("model.n_head (6) is not
  // divisible by parallel.tp (4)"); empty when it can be built.
  std::vector<std::string> (*shape_problems)(const ModelConfig& config, int tp);
  // Fills what the config left to the architecture: n_kv_head and ffn_hidden where 0, and tie_embeddings
  // where the user did not set it (tie_set false).
  void (*fill_defaults)(ModelConfig& config, bool tie_set);
  // How Hugging Face transformers names and lays out its weights and describes it in config.json
  // (`tessera export --format hf`, `tessera import --hf`).
  const HfFormat* hf;
  // The bytes this architecture's training Model plans in its activation arena for a stage shape, from the
  // shapes alone (models/arena_plan.h): the layout planner's activation memory.
  size_t (*train_arena_bytes)(const ModelConfig& config, const ArenaPlanShape& shape);
};

// The architecture named config.arch. Throws ConfigError naming the known ones for another name.
const ModelArchitecture& model_architecture(const std::string& arch);
// The architecture whose Hugging Face model_type (config.json) is model_type. Throws ConfigError naming the
// known ones (where: the file, for the message).
const ModelArchitecture& hf_model_architecture(const std::string& model_type, const std::string& where);
// The names of every registered architecture, for messages ("gpt2, llama").
std::string architecture_names();

// Conveniences over model_architecture(config.arch).
std::vector<ParamSpec> param_specs(const ModelConfig& config);
std::unique_ptr<Model> create_model(const ModelConfig& config, Backend& backend, ProcessGroup& tp, StageRange stage,
                                    int micro_batch, int seq_len, int slots, ModelUse use = ModelUse::kTrain);
// Parameters of the model (unpadded; a tied embedding counted once).
int64_t num_parameters(const ModelConfig& config);
// Training FLOPs per token: 6 per weight of every matrix product (every parameter but the input embedding
// tables, plus a tied output head once more) and 12 * n_layer * n_embd * seq_len for attention's two
// products, as in the PaLM appendix and llm.c.
double model_flops_per_token(const ModelConfig& config, int64_t seq_len);

}  // namespace tessera

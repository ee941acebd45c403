// The registered architectures.
#include "models/registry.h"

#include "core/check.h"
#include "models/gpt2/gpt2_hf.h"
#include "models/gpt2/gpt2_model.h"
#include "models/llama/llama_hf.h"
#include "models/llama/llama_model.h"

namespace tessera {

namespace {

template <typename M>
std::unique_ptr<Model> create(const ModelConfig& config, Backend& backend, ProcessGroup& tp, StageRange stage,
                              int micro_batch, int seq_len, int slots, ModelUse use) {
  return std::make_unique<M>(config, backend, tp, stage, micro_batch, seq_len, slots, use);
}

// One line per architecture.
const ModelArchitecture kArchitectures[] = {
    {"gpt2", &gpt2_param_specs, &create<Gpt2Model>, &gpt2_shape_problems, &gpt2_fill_defaults, &kGpt2HfFormat,
     &gpt2_train_arena_bytes},
    {"llama", &llama_param_specs, &create<LlamaModel>, &llama_shape_problems, &llama_fill_defaults, &kLlamaHfFormat,
     &llama_train_arena_bytes},
};

}  // namespace

const ModelArchitecture& model_architecture(const std::string& arch) {
  for (const ModelArchitecture& a : kArchitectures)
    if (arch == a.name) return a;
  TS_CHECK(false, ConfigError, "model.arch '", arch, "' is not an architecture this build knows (",
           architecture_names(), ")");
  return kArchitectures[0];
}

const ModelArchitecture& hf_model_architecture(const std::string& model_type, const std::string& where) {
  std::string known;
  for (const ModelArchitecture& a : kArchitectures) {
    if (a.hf == nullptr) continue;
    if (model_type == a.hf->model_type) return a;
    known += (known.empty() ? "" : ", ") + std::string(a.hf->model_type);
  }
  TS_CHECK(false, ConfigError, where, ": model_type \"", model_type, "\" is not one Tessera can build (it knows ",
           known, ")");
  return kArchitectures[0];
}

std::string architecture_names() {
  std::string names;
  for (const ModelArchitecture& a : kArchitectures) names += (names.empty() ? "" : ", ") + std::string(a.name);
  return names;
}

std::vector<ParamSpec> param_specs(const ModelConfig& config) {
  return model_architecture(config.arch).param_specs(config);
}

std::unique_ptr<Model> create_model(const ModelConfig& config, Backend& backend, ProcessGroup& tp, StageRange stage,
                                    int micro_batch, int seq_len, int slots, ModelUse use) {
  return model_architecture(config.arch).create(config, backend, tp, stage, micro_batch, seq_len, slots, use);
}

int64_t num_parameters(const ModelConfig& config) {
  int64_t total = 0;
  for (const ParamSpec& spec : param_specs(config)) total += spec.numel();
  return total;
}

double model_flops_per_token(const ModelConfig& config, int64_t seq_len) {
  double matmul_params = 0;
  for (const ParamSpec& spec : param_specs(config)) {
    // An input embedding is a lookup, not a product; tied to the output head, it is a product there.
    if (spec.place != ParamPlace::kInput || spec.tied_across_stages) matmul_params += static_cast<double>(spec.numel());
  }
  return 6.0 * matmul_params + 12.0 * config.n_layer * config.n_embd * static_cast<double>(seq_len);
}

}  // namespace tessera

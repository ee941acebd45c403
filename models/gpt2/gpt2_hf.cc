// GPT-2 as Hugging Face's GPT2LMHeadModel stores it. Its Conv1D layers keep weights as [in, out], the
// transpose of Tessera's [out, in]: h.<l>.attn.qkv.weight [3C, C] is transformer.h.<l>.attn.c_attn.weight
// [C, 3C]. The fused QKV's order (Q, K, V, each by heads) is the same as c_attn's split, so nothing else moves.
// The output head is tied to wte in both.
#include "models/gpt2/gpt2_hf.h"

#include <string>
#include <vector>

#include "core/check.h"

namespace tessera {

namespace {

std::vector<HfTensorName> gpt2_hf_tensor_names(const ModelConfig& config) {
  std::vector<HfTensorName> names = {{"wte", "transformer.wte.weight", false},
                                     {"wpe", "transformer.wpe.weight", false}};
  for (int l = 0; l < config.n_layer; ++l) {
    const std::string h = "h." + std::to_string(l) + ".", hf = "transformer.h." + std::to_string(l) + ".";
    for (const char* suffix : {"weight", "bias"}) names.push_back({h + "ln1." + suffix, hf + "ln_1." + suffix, false});
    names.push_back({h + "attn.qkv.weight", hf + "attn.c_attn.weight", true});
    names.push_back({h + "attn.qkv.bias", hf + "attn.c_attn.bias", false});
    names.push_back({h + "attn.proj.weight", hf + "attn.c_proj.weight", true});
    names.push_back({h + "attn.proj.bias", hf + "attn.c_proj.bias", false});
    for (const char* suffix : {"weight", "bias"}) names.push_back({h + "ln2." + suffix, hf + "ln_2." + suffix, false});
    names.push_back({h + "mlp.fc.weight", hf + "mlp.c_fc.weight", true});
    names.push_back({h + "mlp.fc.bias", hf + "mlp.c_fc.bias", false});
    names.push_back({h + "mlp.proj.weight", hf + "mlp.c_proj.weight", true});
    names.push_back({h + "mlp.proj.bias", hf + "mlp.c_proj.bias", false});
  }
  names.push_back({"lnf.weight", "transformer.ln_f.weight", false});
  names.push_back({"lnf.bias", "transformer.ln_f.bias", false});
  return names;
}

std::vector<HfConfigEntry> gpt2_hf_config_entries(const ModelConfig& config) {
  return {
      {"n_embd", int64_t{config.n_embd}},
      {"n_layer", int64_t{config.n_layer}},
      {"n_head", int64_t{config.n_head}},
      {"n_positions", int64_t{config.max_seq_len}},
      {"n_ctx", int64_t{config.max_seq_len}},
      {"vocab_size", int64_t{config.vocab_size}},
      {"layer_norm_epsilon", float_as_decimal(config.norm_eps)},
      {"activation_function", std::string("gelu_new")},
      {"tie_word_embeddings", true},
  };
}

ModelConfig gpt2_hf_model_config(const HfConfigValues& values, const std::string& where) {
  ModelConfig config;
  config.arch = "gpt2";
  config.n_embd = hf_positive_int(values, "n_embd", where);
  config.n_layer = hf_positive_int(values, "n_layer", where);
  config.n_head = hf_positive_int(values, "n_head", where);
  config.max_seq_len = hf_positive_int(values, "n_positions", where);
  config.vocab_size = hf_positive_int(values, "vocab_size", where);
  config.norm_eps = static_cast<float>(hf_number(values, "layer_norm_epsilon", where, 1e-5));
  config.n_kv_head = config.n_head;
  config.ffn_hidden = 4 * config.n_embd;
  config.tie_embeddings = true;
  // GELU's tanh approximation is what Tessera computes; "gelu" (erf) would be another network.
  const std::string activation = hf_string(values, "activation_function", where, "gelu_new");
  TS_CHECK(activation == "gelu_new" || activation == "gelu_pytorch_tanh", ConfigError, where,
           ": activation_function \"", activation, "\" is not GELU's tanh approximation (gelu_new), the only one ",
           "Tessera's GPT-2 has");
  TS_CHECK(hf_int(values, "n_inner", where, 4 * config.n_embd) == 4 * config.n_embd, ConfigError, where, ": n_inner (",
           hf_int(values, "n_inner", where, 0), ") is not 4 * n_embd, the MLP width of Tessera's GPT-2");
  TS_CHECK(hf_bool(values, "tie_word_embeddings", where, true), ConfigError, where,
           ": tie_word_embeddings is false; Tessera's GPT-2 always ties its output head to wte");
  TS_CHECK(hf_bool(values, "scale_attn_weights", where, true) &&
               !hf_bool(values, "scale_attn_by_inverse_layer_idx", where, false),
           ConfigError, where,
           ": attention scaled otherwise than by 1/sqrt(head size) (scale_attn_weights, "
           "scale_attn_by_inverse_layer_idx) is not what Tessera's GPT-2 computes");
  return config;
}

}  // namespace

const HfFormat kGpt2HfFormat = {"gpt2", "GPT2LMHeadModel", &gpt2_hf_tensor_names, &gpt2_hf_config_entries,
                                &gpt2_hf_model_config};

}  // namespace tessera

// Llama as Hugging Face's LlamaForCausalLM stores it. Every weight keeps its layout: both store nn.Linear's
// [out, in], and both rotate q and k in the rotate-half convention (pairs (x_i, x_{i + hs/2})), so q_proj and
// k_proj need no permutation of their rows (checkpoints converted from Meta's interleaved layout have had it
// applied already). gate and up are separate tensors in both (Tessera fuses their GEMM, not their storage).
#include "models/llama/llama_hf.h"

#include <string>
#include <vector>

#include "core/check.h"

namespace tessera {

namespace {

std::vector<HfTensorName> llama_hf_tensor_names(const ModelConfig& config) {
  std::vector<HfTensorName> names = {{"wte", "model.embed_tokens.weight", false}};
  for (int l = 0; l < config.n_layer; ++l) {
    const std::string h = "h." + std::to_string(l) + ".", hf = "model.layers." + std::to_string(l) + ".";
    names.push_back({h + "attn_norm.weight", hf + "input_layernorm.weight", false});
    for (const char* p : {"q", "k", "v", "o"}) {
      names.push_back({h + "attn." + p + ".weight", hf + "self_attn." + p + "_proj.weight", false});
    }
    names.push_back({h + "mlp_norm.weight", hf + "post_attention_layernorm.weight", false});
    for (const char* p : {"gate", "up", "down"}) {
      names.push_back({h + "mlp." + p + ".weight", hf + "mlp." + p + "_proj.weight", false});
    }
  }
  names.push_back({"norm.weight", "model.norm.weight", false});
  if (!config.tie_embeddings) names.push_back({"lm_head.weight", "lm_head.weight", false});
  return names;
}

std::vector<HfConfigEntry> llama_hf_config_entries(const ModelConfig& config) {
  return {
      {"hidden_size", int64_t{config.n_embd}},
      {"intermediate_size", int64_t{config.ffn_hidden}},
      {"num_hidden_layers", int64_t{config.n_layer}},
      {"num_attention_heads", int64_t{config.n_head}},
      {"num_key_value_heads", int64_t{config.n_kv_head}},
      {"rope_theta", float_as_decimal(config.rope_theta)},
      {"rms_norm_eps", float_as_decimal(config.norm_eps)},
      {"tie_word_embeddings", config.tie_embeddings},
      {"max_position_embeddings", int64_t{config.max_seq_len}},
      {"vocab_size", int64_t{config.vocab_size}},
      {"hidden_act", std::string("silu")},
      {"attention_bias", false},
      {"mlp_bias", false},
  };
}

ModelConfig llama_hf_model_config(const HfConfigValues& values, const std::string& where) {
  ModelConfig config;
  config.arch = "llama";
  config.n_embd = hf_positive_int(values, "hidden_size", where);
  config.ffn_hidden = hf_positive_int(values, "intermediate_size", where);
  config.n_layer = hf_positive_int(values, "num_hidden_layers", where);
  config.n_head = hf_positive_int(values, "num_attention_heads", where);
  config.n_kv_head =
      hf_has(values, "num_key_value_heads") ? hf_positive_int(values, "num_key_value_heads", where) : config.n_head;
  config.vocab_size = hf_positive_int(values, "vocab_size", where);
  config.max_seq_len =
      hf_has(values, "max_position_embeddings") ? hf_positive_int(values, "max_position_embeddings", where) : 2048;
  // Hugging Face's defaults where config.json leaves them out.
  config.rope_theta = static_cast<float>(hf_number(values, "rope_theta", where, 10000.0));
  config.norm_eps = static_cast<float>(hf_number(values, "rms_norm_eps", where, 1e-6));
  config.tie_embeddings = hf_bool(values, "tie_word_embeddings", where, false);

  const std::string act = hf_string(values, "hidden_act", where, "silu");
  TS_CHECK(act == "silu", ConfigError, where, ": hidden_act \"", act,
           "\" is not silu, the gate activation of Tessera's SwiGLU MLP");
  TS_CHECK(!hf_bool(values, "attention_bias", where, false) && !hf_bool(values, "mlp_bias", where, false), ConfigError,
           where, ": attention_bias or mlp_bias is true; Tessera's Llama has no biases");
  TS_CHECK(!hf_has(values, "rope_scaling"), ConfigError, where,
           ": rope_scaling is set; Tessera's RoPE has no scaling (positions rotate by pos * rope_theta^(-2i/hs))");
  TS_CHECK(config.n_embd % config.n_head == 0, ConfigError, where, ": hidden_size (", config.n_embd,
           ") is not divisible by num_attention_heads (", config.n_head, ")");
  TS_CHECK(hf_int(values, "head_dim", where, config.n_embd / config.n_head) == config.n_embd / config.n_head,
           ConfigError, where, ": head_dim (", hf_int(values, "head_dim", where, 0),
           ") is not hidden_size / num_attention_heads; Tessera's Llama derives the head size from them");
  return config;
}

}  // namespace

const HfFormat kLlamaHfFormat = {"llama", "LlamaForCausalLM", &llama_hf_tensor_names, &llama_hf_config_entries,
                                 &llama_hf_model_config};

}  // namespace tessera

// Llama in Hugging Face transformers (LlamaForCausalLM): weight names and layouts, config.json.
#pragma once

#include "models/hf_format.h"

namespace tessera {

extern const HfFormat kLlamaHfFormat;

}  // namespace tessera

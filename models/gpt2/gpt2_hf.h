// GPT-2 in Hugging Face transformers (GPT2LMHeadModel): weight names and layouts, config.json.
#pragma once

#include "models/hf_format.h"

namespace tessera {

extern const HfFormat kGpt2HfFormat;

}  // namespace tessera

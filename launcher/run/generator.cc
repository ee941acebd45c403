// The generation loop.
#include "launcher/run/generator.h"

#include <algorithm>
#include <chrono>

#include "core/check.h"

namespace tessera {

std::vector<int32_t> generate(PipelineDecoder& decoder, const Model& model, const std::vector<int32_t>& prompt,
                              const GenerateOptions& options, uint64_t sequence,
                              const std::function<void(int32_t)>& on_token, GenerateStats* stats) {
  using Clock = std::chrono::steady_clock;
  const int n = static_cast<int>(prompt.size());
  TS_ASSERT(model.micro_batch() == 1 && n >= 1 && n + options.max_new_tokens <= model.seq_len(), "a prompt of ", n,
            " tokens and ", options.max_new_tokens, " new ones in a plan of ", model.seq_len(), " positions");
  const int64_t vocab = model.config().vocab_size;
  std::vector<int32_t> sequence_so_far = prompt, generated;
  std::vector<int32_t> padded;  // full recomputation: the sequence so far, then padding up to seq_len
  GenerateStats local;
  local.prompt_tokens = n;
  for (int step = 0; step < options.max_new_tokens; ++step) {
    const Clock::time_point start = Clock::now();
    std::vector<float> logits;
    const int length = n + step;  // tokens whose next one is chosen now
    if (!options.kv_cache) {
      padded.assign(static_cast<size_t>(model.seq_len()), 0);
      std::copy(sequence_so_far.begin(), sequence_so_far.end(), padded.begin());
      logits = decoder.full_forward(padded, length - 1);
    } else if (step == 0) {
      logits = decoder.decode(prompt, 0, n);  // prefill
    } else {
      logits = decoder.decode({sequence_so_far.back()}, length - 1, 1);
    }
    std::vector<int32_t> next(1, 0);
    if (!logits.empty()) {
      const int64_t choosable = options.vocab_limit > 0 ? std::min<int64_t>(vocab, options.vocab_limit) : vocab;
      next[0] = pick_token(logits.data(), choosable, options.sampling, sequence, step);
    }
    decoder.share_from_last_stage(next);
    (step == 0 ? local.prefill_s : local.decode_s) += std::chrono::duration<double>(Clock::now() - start).count();
    generated.push_back(next[0]);
    sequence_so_far.push_back(next[0]);
    if (on_token) on_token(next[0]);
    if (next[0] == options.eos_id) break;
  }
  local.new_tokens = static_cast<int64_t>(generated.size());
  if (stats != nullptr) *stats = local;
  return generated;
}

}  // namespace tessera

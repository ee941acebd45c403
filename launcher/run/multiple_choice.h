// Multiple-choice scoring, as lm-evaluation-harness scores such tasks: every choice's log-likelihood given the
// context, then accuracy by the summed log-likelihood (acc) and by the log-likelihood per character of the
// choice (acc_norm).
//
// Each (example, choice) becomes one sequence: EOS (the start of a document, as in training), the context's
// tokens, the choice's tokens. The choice's log-likelihood is minus the sum of the losses at the positions that
// predict its tokens. A sequence longer than seq_len + 1 loses context tokens from the left (counted); shorter
// ones are padded (the padding's losses are not read). Sequences go through the model in batches of the job's
// global batch, in any layout.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "launcher/data/multiple_choice_task.h"
#include "launcher/data/tokenizer.h"
#include "launcher/run/trainer.h"

namespace tessera {

struct MultipleChoiceResult {
  int64_t examples = 0;
  int64_t correct = 0, correct_norm = 0;
  int64_t truncated = 0;  // sequences whose context lost tokens to fit seq_len
  double acc() const { return examples ? static_cast<double>(correct) / examples : 0; }
  double acc_norm() const { return examples ? static_cast<double>(correct_norm) / examples : 0; }
  // Per example, per choice: the log-likelihood (natural log) of its tokens.
  std::vector<std::vector<double>> loglik;
  std::vector<int> pred, pred_norm;  // per example: the choice acc and acc_norm pick
};

// Collective (every rank of the job). seq_len and global_batch are the trainer's.
MultipleChoiceResult score_multiple_choice(Trainer& trainer, const Tokenizer& tokenizer,
                                           const std::vector<tasks::MultipleChoiceExample>& examples, int seq_len,
                                           int global_batch, const std::string& path);

}  // namespace tessera

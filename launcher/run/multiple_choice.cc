// Multiple-choice scoring.
#include "launcher/run/multiple_choice.h"

#include <algorithm>

#include "core/check.h"
#include "launcher/common/human_format.h"
#include "launcher/data/sampler.h"

namespace tessera {

namespace {

// Characters (UTF-8 code points) of text: acc_norm's length.
int64_t characters(const std::string& text) {
  int64_t n = 0;
  for (unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
}

// Fixed sequences as a sampler; indices past the end read the first one again (padding a last batch).
class SequenceSampler final : public Sampler {
 public:
  SequenceSampler(std::vector<std::vector<int32_t>> sequences, int seq_len, int32_t pad)
      : sequences_(std::move(sequences)), seq_len_(seq_len), pad_(pad) {}
  int seq_len() const override { return seq_len_; }
  void get(int64_t index, int32_t* inputs, int32_t* targets) const override {
    const std::vector<int32_t>& s = sequences_[index < static_cast<int64_t>(sequences_.size()) ? index : 0];
    for (int t = 0; t < seq_len_; ++t) {
      inputs[t] = t < static_cast<int>(s.size()) - 1 ? s[t] : pad_;
      targets[t] = t + 1 < static_cast<int>(s.size()) ? s[t + 1] : pad_;
    }
  }

 private:
  std::vector<std::vector<int32_t>> sequences_;
  int seq_len_;
  int32_t pad_;
};

}  // namespace

MultipleChoiceResult score_multiple_choice(Trainer& trainer, const Tokenizer& tokenizer,
                                           const std::vector<tasks::MultipleChoiceExample>& examples, int seq_len,
                                           int global_batch, const std::string& path) {
  const int eos = tokenizer.eos_id();
  TS_CHECK(eos >= 0, DataError, tokenizer.path(), ": the tokenizer has no end-of-sequence piece to start a document");
  MultipleChoiceResult result;
  std::vector<std::vector<int32_t>> sequences;
  std::vector<int> scored;  // per sequence: how many final targets are the choice's
  for (size_t e = 0; e < examples.size(); ++e) {
    const std::vector<int> context = tokenizer.encode(examples[e].context());
    for (int c = 0; c < examples[e].choices_size(); ++c) {
      const std::vector<int> choice = tokenizer.encode(examples[e].choices(c));
      TS_CHECK(!choice.empty(), DataError, path, ":", e + 1, ": choices[", c,
               "] has no tokens; every choice needs some text");
      TS_CHECK(static_cast<int>(choice.size()) <= seq_len, DataError, path, ":", e + 1, ": choices[", c, "] has ",
               choice.size(), " tokens, more than train.seq_len (", seq_len,
               ") can score; shorten it or evaluate with a longer --set train.seq_len (up to model.max_seq_len)");
      std::vector<int32_t> s{eos};
      s.insert(s.end(), context.begin(), context.end());
      s.insert(s.end(), choice.begin(), choice.end());
      if (static_cast<int>(s.size()) > seq_len + 1) {  // keep the choice and the nearest context
        s.erase(s.begin(), s.end() - (seq_len + 1));
        ++result.truncated;
      }
      sequences.push_back(std::move(s));
      scored.push_back(static_cast<int>(choice.size()));
    }
  }
  std::vector<double> loglik(sequences.size());
  std::vector<size_t> lengths(sequences.size());
  for (size_t i = 0; i < sequences.size(); ++i) lengths[i] = sequences[i].size();
  const SequenceSampler sampler(std::move(sequences), seq_len, eos);
  for (size_t first = 0; first < loglik.size(); first += static_cast<size_t>(global_batch)) {
    const std::vector<float> losses = trainer.token_losses(sampler, static_cast<int64_t>(first));
    for (size_t i = first; i < std::min(loglik.size(), first + global_batch); ++i) {
      // Targets 0 .. length-2 are real; the last `scored` of them are the choice's tokens.
      const size_t row = (i - first) * static_cast<size_t>(seq_len);
      const size_t end = lengths[i] - 1;
      double sum = 0;
      for (size_t t = end - static_cast<size_t>(scored[i]); t < end; ++t) sum += losses[row + t];
      loglik[i] = -sum;
    }
  }
  size_t k = 0;
  for (const tasks::MultipleChoiceExample& example : examples) {
    std::vector<double> scores(loglik.begin() + static_cast<std::ptrdiff_t>(k),
                               loglik.begin() + static_cast<std::ptrdiff_t>(k + example.choices_size()));
    k += static_cast<size_t>(example.choices_size());
    int best = 0, best_norm = 0;
    for (int c = 1; c < example.choices_size(); ++c) {
      if (scores[c] > scores[best]) best = c;
      const auto norm = [&](int j) { return scores[j] / std::max<int64_t>(1, characters(example.choices(j))); };
      if (norm(c) > norm(best_norm)) best_norm = c;
    }
    result.pred.push_back(best);
    result.pred_norm.push_back(best_norm);
    result.correct += best == example.label();
    result.correct_norm += best_norm == example.label();
    result.loglik.push_back(std::move(scores));
  }
  result.examples = static_cast<int64_t>(examples.size());
  return result;
}

}  // namespace tessera

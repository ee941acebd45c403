// Text to token ids and back with the job's SentencePiece model (data.tokenizer), for the commands that take
// text: eval's multiple-choice tasks, and prompts.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace tessera {

class Tokenizer {
 public:
  // Loads the SentencePiece model at path. Throws DataError naming `field` ("data.tokenizer") and the path when
  // it cannot be read or is not a SentencePiece model.
  Tokenizer(const std::string& path, const std::string& field);
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // The ids of text (SentencePiece marks its first word as word-initial). Throws DataError if it fails.
  std::vector<int> encode(const std::string& text) const;
  std::string decode(const std::vector<int>& ids) const;
  int eos_id() const;  // -1 if the model has none
  int vocab_size() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
};

}  // namespace tessera

// The SentencePiece wrapper.
#include "launcher/data/tokenizer.h"

#include <sentencepiece_processor.h>

#include "core/check.h"
#include "launcher/common/regular_file.h"

namespace tessera {

Tokenizer::Tokenizer(const std::string& path, const std::string& field)
    : path_(path), processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  const std::string problem = regular_file_problem(path);
  TS_CHECK(problem.empty(), DataError, field, " '", path, "': ", problem,
           "; give the SentencePiece .model file the data was prepared with");
  const auto status = processor_->Load(path);
  TS_CHECK(status.ok(), DataError, field, " '", path, "' is not a SentencePiece model (", status.ToString(), ")");
}

Tokenizer::~Tokenizer() = default;

std::vector<int> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  const auto status = processor_->Encode(text, &ids);
  TS_CHECK(status.ok(), DataError, path_, ": cannot tokenize text (", status.ToString(), ")");
  return ids;
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  std::string text;
  const auto status = processor_->Decode(ids, &text);
  TS_CHECK(status.ok(), DataError, path_, ": cannot decode ids (", status.ToString(), ")");
  return text;
}

int Tokenizer::eos_id() const { return processor_->eos_id(); }
int Tokenizer::vocab_size() const { return processor_->GetPieceSize(); }

}  // namespace tessera

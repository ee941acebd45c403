// The job's tokenizer file (data.tokenizer): a SentencePiece model, checked when a job starts so that a
// checkpoint records the identity of a tokenizer that really exists and fits the model.
#pragma once

#include <cstdint>
#include <string>

namespace tessera {

struct TokenizerFile {
  int vocab_size = 0;  // pieces
  uint64_t xxh64 = 0;  // of the file's bytes: the identity recorded in checkpoints
};

// Loads the SentencePiece model at path and checks that its vocabulary fits a model of model_vocab_size
// (every id it produces must be an embedding row). Throws DataError naming `field` (e.g. "data.tokenizer")
// and the path when the file is missing, not a regular file, not a SentencePiece model, or too large.
TokenizerFile check_tokenizer_file(const std::string& path, int model_vocab_size, const std::string& field);

}  // namespace tessera

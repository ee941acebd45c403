// Checking a job's tokenizer file.
#include "launcher/data/tokenizer_file.h"

#include <sentencepiece_processor.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/check.h"
#include "launcher/common/checksum.h"
#include "launcher/common/regular_file.h"

namespace tessera {

TokenizerFile check_tokenizer_file(const std::string& path, int model_vocab_size, const std::string& field) {
  const std::string hint = "; give the .model file that `tessera prepare --tokenizer-out` (or spm_train) wrote";
  std::string problem;
  const int fd = open_regular_file(path, &problem);
  TS_CHECK(fd >= 0, DataError, field, " '", path, "': ", problem, hint);
  std::string bytes;
  char buffer[1 << 16];
  int error = 0;
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) error = errno;
    if (n <= 0) break;
    bytes.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  TS_CHECK(error == 0, DataError, field, " '", path, "': cannot read it (", std::strerror(error), ")");
  sentencepiece::SentencePieceProcessor processor;
  const auto status = processor.LoadFromSerializedProto(bytes);
  TS_CHECK(status.ok() && processor.GetPieceSize() > 0, DataError, field, " '", path, "': not a SentencePiece model (",
           status.ToString(), ")", hint);
  TokenizerFile file;
  file.vocab_size = processor.GetPieceSize();
  file.xxh64 = xxh64(bytes.data(), bytes.size());
  TS_CHECK(file.vocab_size <= model_vocab_size, DataError, field, " '", path, "' has ", file.vocab_size,
           " pieces, more than model.vocab_size ", model_vocab_size,
           ": its ids would not all have an embedding row; raise model.vocab_size or use the tokenizer the data "
           "was prepared with");
  return file;
}

}  // namespace tessera

// The lines of one input file of `tessera prepare`, plain or gzip'd. A file is gzip'd when it starts with the
// gzip magic bytes 1f 8b, whatever its name: it is then inflated through zlib as it is read (concatenated gzip
// members, as `cat a.gz b.gz` makes, are read one after the other). Memory stays bounded by one buffer and the
// longest line.
#pragma once

#include <zlib.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

class LineReader {
 public:
  // Opens path, a regular file (open_regular_file: never blocks on a FIFO). `name` is the file's name in
  // messages (the path as the user gave it). Throws DataError naming it when it cannot be opened.
  LineReader(const std::string& path, std::string name);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // The next line into *line, without its '\n' (a last line without one counts too); false after the last.
  // Throws DataError naming the file on a read error or a damaged or truncated gzip stream.
  bool next(std::string* line);
  // Bytes of the file consumed so far (compressed bytes for a gzip'd file): the progress through it.
  int64_t bytes_read() const { return raw_bytes_read_; }
  bool gzipped() const { return gzipped_; }

 private:
  // Refills text_ from the file (inflating if gzipped_); false at the end of the file.
  bool fill();
  bool read_raw();

  std::string name_;
  int fd_ = -1;
  bool gzipped_ = false;
  bool raw_eof_ = false;
  bool stream_ended_ = true;  // gzip: between members (or before the first)
  z_stream zstream_{};
  bool zstream_initialized_ = false;
  std::vector<unsigned char> raw_;  // raw_[raw_begin_, raw_end_) not yet consumed
  size_t raw_begin_ = 0;
  size_t raw_end_ = 0;
  int64_t raw_bytes_read_ = 0;
  std::string text_;  // decoded bytes, text_[text_begin_, ...) not yet returned
  size_t text_begin_ = 0;
};

}  // namespace tessera

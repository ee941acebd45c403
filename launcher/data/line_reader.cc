// Plain and gzip'd input lines (line_reader.h).
#include "launcher/data/line_reader.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/check.h"
#include "launcher/common/regular_file.h"

namespace tessera {
namespace {

constexpr size_t kRawBufferBytes = 1 << 20;
// Decoded bytes produced per inflate() call.
constexpr size_t kInflateChunkBytes = 1 << 18;

}  // namespace

LineReader::LineReader(const std::string& path, std::string name) : name_(std::move(name)) {
  std::string problem;
  fd_ = open_regular_file(path, &problem);
  TS_CHECK(fd_ >= 0, DataError, name_, ": ", problem, "; check the --input path");
  raw_.resize(kRawBufferBytes);
  read_raw();
  gzipped_ = raw_end_ >= 2 && raw_[0] == 0x1f && raw_[1] == 0x8b;
  if (gzipped_) {
    // 15 + 16: a gzip header and trailer (not zlib's, not raw deflate), the largest window.
    TS_CHECK(inflateInit2(&zstream_, 15 + 16) == Z_OK, DataError, name_, ": cannot start zlib to read this gzip file");
    zstream_initialized_ = true;
  }
}

LineReader::~LineReader() {
  if (zstream_initialized_) inflateEnd(&zstream_);
  if (fd_ >= 0) ::close(fd_);
}

bool LineReader::read_raw() {
  raw_begin_ = raw_end_ = 0;
  if (raw_eof_) return false;
  ssize_t n;
  do {
    n = ::read(fd_, raw_.data(), raw_.size());
  } while (n < 0 && errno == EINTR);
  TS_CHECK(n >= 0, DataError, name_, ": read error (", std::strerror(errno), "); check the file");
  if (n == 0) {
    raw_eof_ = true;
    return false;
  }
  raw_end_ = static_cast<size_t>(n);
  raw_bytes_read_ += n;
  return true;
}

bool LineReader::fill() {
  if (!gzipped_) {
    if (raw_begin_ == raw_end_ && !read_raw()) return false;
    text_.append(reinterpret_cast<const char*>(raw_.data()) + raw_begin_, raw_end_ - raw_begin_);
    raw_begin_ = raw_end_;
    return true;
  }
  while (true) {
    if (raw_begin_ == raw_end_ && !read_raw()) {
      TS_CHECK(stream_ended_, DataError, name_, ": the gzip stream is truncated (it ends after ", raw_bytes_read_,
               " bytes, before its end marker): the file was cut short; copy or download it again");
      return false;
    }
    if (stream_ended_) {  // the start of the first or of a further gzip member
      TS_CHECK(inflateReset(&zstream_) == Z_OK, DataError, name_, ": cannot reset zlib");
      stream_ended_ = false;
    }
    const size_t before = text_.size();
    text_.resize(before + kInflateChunkBytes);
    zstream_.next_in = raw_.data() + raw_begin_;
    zstream_.avail_in = static_cast<uInt>(raw_end_ - raw_begin_);
    zstream_.next_out = reinterpret_cast<Bytef*>(text_.data() + before);
    zstream_.avail_out = static_cast<uInt>(kInflateChunkBytes);
    const int status = inflate(&zstream_, Z_NO_FLUSH);
    const size_t produced = kInflateChunkBytes - zstream_.avail_out;
    text_.resize(before + produced);
    raw_begin_ = raw_end_ - zstream_.avail_in;
    if (status != Z_OK && status != Z_STREAM_END && status != Z_BUF_ERROR) {
      const std::string detail = zstream_.msg != nullptr ? zstream_.msg : str_cat("error ", status);
      TS_CHECK(false, DataError, name_, ": damaged gzip data (zlib: ", detail, ") within its first ", raw_bytes_read_,
               " bytes; check the file with `gzip -t`");
    }
    if (status == Z_STREAM_END) stream_ended_ = true;
    if (produced > 0) return true;
  }
}

bool LineReader::next(std::string* line) {
  size_t searched = text_begin_;
  while (true) {
    const size_t end = text_.find('\n', searched);
    if (end != std::string::npos) {
      line->assign(text_, text_begin_, end - text_begin_);
      text_begin_ = end + 1;
      return true;
    }
    // Keep only the partial line, then read more.
    text_.erase(0, text_begin_);
    text_begin_ = 0;
    searched = text_.size();
    if (!fill()) {
      if (text_.empty()) return false;
      line->assign(text_);
      text_.clear();
      return true;
    }
  }
}

}  // namespace tessera

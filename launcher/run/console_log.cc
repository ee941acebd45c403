// The console copied into train.log through a glibc cookie stream.
#include "launcher/run/console_log.h"

#include <cerrno>
#include <cstring>

#include "core/check.h"

namespace tessera {

ConsoleLog::ConsoleLog() : console_(stdout) {
  cookie_io_functions_t functions{};
  functions.write = [](void* cookie, const char* data, size_t size) -> ssize_t {
    return static_cast<ssize_t>(ConsoleLog::write(cookie, data, size));
  };
  stream_ = fopencookie(this, "w", functions);
  if (stream_ == nullptr) return;  // no copy, the console as before
  std::setvbuf(stream_, nullptr, _IOLBF, 1 << 16);
  std::fflush(console_);
  stdout = stream_;
}

ConsoleLog::~ConsoleLog() {
  if (stream_ != nullptr) {
    std::fflush(stream_);
    stdout = console_;
    std::fclose(stream_);
  }
  std::fflush(console_);
  if (log_ != nullptr) std::fclose(log_);
}

void ConsoleLog::open(const std::string& path) {
  log_ = std::fopen(path.c_str(), "a");
  TS_CHECK(log_ != nullptr, ConfigError, "cannot write '", path, "': ", std::strerror(errno));
  if (stream_ != nullptr) std::fflush(stream_);
  std::fwrite(held_.data(), 1, held_.size(), log_);
  std::fflush(log_);
  held_.clear();
}

long ConsoleLog::write(void* cookie, const char* data, size_t size) {
  auto* self = static_cast<ConsoleLog*>(cookie);
  std::fwrite(data, 1, size, self->console_);
  std::fflush(self->console_);
  if (self->log_ != nullptr) {
    std::fwrite(data, 1, size, self->log_);
    std::fflush(self->log_);
  } else {
    self->held_.append(data, size);
  }
  return static_cast<long>(size);
}

}  // namespace tessera

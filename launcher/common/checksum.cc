// XXH64 of files through libxxhash's streaming API.
#include "launcher/common/checksum.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <vector>

#include "core/check.h"
#include "launcher/common/regular_file.h"

namespace tessera {

Xxh64::Xxh64() : state_(XXH64_createState()) {
  if (state_ == nullptr) throw std::bad_alloc();
  XXH64_reset(state_.get(), 0);
}

uint64_t xxh64_file(const std::string& path, uint64_t* size_bytes) {
  std::string problem;
  const int fd = open_regular_file(path, &problem);
  TS_CHECK(fd >= 0, CheckpointError, "cannot open '", path, "' to check it: it ", problem);
  std::vector<unsigned char> buffer(1 << 20);
  Xxh64 hash;
  uint64_t total = 0;
  while (true) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      TS_CHECK(false, CheckpointError, "cannot read '", path, "': ", std::strerror(error));
    }
    if (n == 0) break;
    hash.update(buffer.data(), static_cast<size_t>(n));
    total += static_cast<uint64_t>(n);
  }
  ::close(fd);
  if (size_bytes != nullptr) *size_bytes = total;
  return hash.digest();
}

std::string hex64(uint64_t value) { return fmt::format("{:016x}", value); }

}  // namespace tessera

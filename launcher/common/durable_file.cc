// fsync, atomic replacement and durable renames.
#include "launcher/common/durable_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "core/check.h"
#include "launcher/common/checksum.h"
#include "launcher/common/regular_file.h"

namespace tessera {

namespace {

std::string parent_directory(const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? "." : parent.string();
}

}  // namespace

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TS_CHECK(fd >= 0, CheckpointError, "cannot open '", path, "' to sync it to disk: ", std::strerror(errno));
  const int status = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  TS_CHECK(status == 0, CheckpointError, "cannot sync '", path, "' to disk: ", std::strerror(error),
           ". Check that the disk is healthy and not full.");
}

uint64_t hash_and_sync_file(const std::string& path, uint64_t* size_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TS_CHECK(fd >= 0, CheckpointError, "cannot open '", path, "': ", std::strerror(errno));
#ifdef __linux__
  // Start writing the file back now, so the disk works while the file is hashed from the page cache.
  ::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
#endif
  std::vector<unsigned char> buffer(1 << 20);
  Xxh64 hash;
  uint64_t total = 0;
  int error = 0;
  while (true) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) error = errno;
    if (n <= 0) break;
    hash.update(buffer.data(), static_cast<size_t>(n));
    total += static_cast<uint64_t>(n);
  }
  if (error == 0 && ::fsync(fd) != 0) error = errno;
  ::close(fd);
  TS_CHECK(error == 0, CheckpointError, "cannot read back and sync '", path, "': ", std::strerror(error),
           ". Check that the disk is healthy and not full.");
  *size_bytes = total;
  return hash.digest();
}

void write_file_atomically(const std::string& path, const std::string& contents) {
  const std::string temporary = path + ".tmp";
  std::FILE* file = std::fopen(temporary.c_str(), "wb");
  TS_CHECK(file != nullptr, CheckpointError, "cannot create '", temporary, "': ", std::strerror(errno));
  const size_t written = std::fwrite(contents.data(), 1, contents.size(), file);
  const bool flushed = std::fflush(file) == 0;
  const int error = errno;
  const bool synced = flushed && written == contents.size() && ::fsync(::fileno(file)) == 0;
  std::fclose(file);
  TS_CHECK(synced, CheckpointError, "cannot write '", temporary, "': ", std::strerror(error),
           ". Check that the disk is not full.");
  rename_durably(temporary, path);
}

void rename_durably(const std::string& from, const std::string& to) {
  TS_CHECK(std::rename(from.c_str(), to.c_str()) == 0, CheckpointError, "cannot rename '", from, "' to '", to,
           "': ", std::strerror(errno));
  fsync_path(parent_directory(to));
}

std::string read_file(const std::string& path) {
  std::string problem;
  const int fd = open_regular_file(path, &problem);
  TS_CHECK(fd >= 0, CheckpointError, "cannot read '", path, "': it ", problem);
  std::FILE* file = ::fdopen(fd, "rb");
  if (file == nullptr) ::close(fd);
  TS_CHECK(file != nullptr, CheckpointError, "cannot read '", path, "': ", std::strerror(errno));
  std::string text;
  char buffer[1 << 16];
  size_t count = 0;
  while ((count = std::fread(buffer, 1, sizeof(buffer), file)) > 0) text.append(buffer, count);
  const bool failed = std::ferror(file) != 0;
  std::fclose(file);
  TS_CHECK(!failed, CheckpointError, "cannot read '", path, "'");
  return text;
}

}  // namespace tessera

// Regular-file checks before reading (see the header).
#include "launcher/common/regular_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "core/check.h"

namespace tessera {

namespace {

// "" for a regular file, else what the mode says it is.
std::string kind_problem(mode_t mode) {
  if (S_ISREG(mode)) return "";
  if (S_ISDIR(mode)) return "is a directory, not a file";
  if (S_ISFIFO(mode)) return "is a FIFO (named pipe), not a regular file";
  if (S_ISCHR(mode)) return "is a character device, not a regular file";
  if (S_ISBLK(mode)) return "is a block device, not a regular file";
  if (S_ISSOCK(mode)) return "is a socket, not a regular file";
  return "is not a regular file";
}

}  // namespace

std::string regular_file_problem(const std::string& path) {
  if (path.empty()) return "is an empty path";
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) {
    const int error = errno;
    struct stat link {};
    if (error == ENOENT && ::lstat(path.c_str(), &link) == 0 && S_ISLNK(link.st_mode)) {
      std::error_code ignored;
      return str_cat("is a symbolic link to '", std::filesystem::read_symlink(path, ignored).string(),
                     "', which does not exist");
    }
    if (error == ENOENT || error == ENOTDIR) return "does not exist";
    return str_cat("cannot be accessed (", std::strerror(error), ")");
  }
  std::string problem = kind_problem(info.st_mode);
  struct stat link {};
  if (!problem.empty() && ::lstat(path.c_str(), &link) == 0 && S_ISLNK(link.st_mode)) {
    std::error_code ignored;
    problem =
        str_cat("is a symbolic link to '", std::filesystem::read_symlink(path, ignored).string(), "', which ", problem);
  }
  return problem;
}

int open_regular_file(const std::string& path, std::string* problem) {
  *problem = regular_file_problem(path);
  if (!problem->empty()) return -1;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    *problem = str_cat("cannot be opened (", std::strerror(errno), ")");
    return -1;
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    *problem = kind_problem(info.st_mode);
    if (problem->empty()) *problem = "cannot be accessed";
    ::close(fd);
    return -1;
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

}  // namespace tessera

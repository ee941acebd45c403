// Read-only file mappings with POSIX mmap.
#include "launcher/common/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "core/check.h"
#include "launcher/common/regular_file.h"

namespace tessera {

MappedFile MappedFile::open(const std::string& path) {
  std::string problem;
  const int fd = open_regular_file(path, &problem);
  TS_CHECK(fd >= 0, DataError, path, ": ", problem,
           problem == "does not exist" ? "; check the data path, or make the dataset with `tessera prepare`"
                                       : "; check the data path");
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    const int error = errno;
    ::close(fd);
    TS_CHECK(false, DataError, path, ": cannot read its size (", std::strerror(error), ")");
  }
  MappedFile file;
  file.path_ = path;
  file.size_ = static_cast<size_t>(info.st_size);
  if (file.size_ > 0) {
    void* address = ::mmap(nullptr, file.size_, PROT_READ, MAP_SHARED, fd, 0);
    const int error = errno;
    ::close(fd);
    TS_CHECK(address != MAP_FAILED, DataError, path, ": cannot memory-map ", file.size_, " bytes (",
             std::strerror(error), "); check that the file system supports mmap and that memory limits allow it");
    file.data_ = static_cast<const uint8_t*>(address);
  } else {
    ::close(fd);
  }
  return file;
}

MappedFile::~MappedFile() { reset(); }

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)), path_(std::move(other.path_)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    path_ = std::move(other.path_);
  }
  return *this;
}

void MappedFile::reset() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace tessera

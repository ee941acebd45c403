// XXH64: the 64-bit xxHash of a byte stream (Yann Collet's algorithm, specified in xxhash's doc/xxhash_spec.md),
// used as the checksum of checkpoint files. Fast on any CPU (several GB/s), no special instructions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace tessera {

// Incremental XXH64. update() may be called with pieces of any size; digest() does not change the state, so
// it can be taken more than once. Not thread-safe; copyable.
class Xxh64 {
 public:
  explicit Xxh64(uint64_t seed = 0);
  void update(const void* data, size_t size);
  uint64_t digest() const;

 private:
  uint64_t seed_;
  uint64_t acc_[4];
  uint64_t total_ = 0;
  unsigned char buffer_[32];
  size_t buffered_ = 0;
};

// XXH64 with seed 0 of size bytes.
uint64_t xxh64(const void* data, size_t size);

// XXH64 with seed 0 of a whole file, and its size through size_bytes if not null. Throws CheckpointError
// naming the file when it cannot be opened or read.
uint64_t xxh64_file(const std::string& path, uint64_t* size_bytes = nullptr);

// "0123456789abcdef": 16 lower-case hex digits.
std::string hex64(uint64_t value);

}  // namespace tessera

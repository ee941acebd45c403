// XXH64 checksums of checkpoint files, manifests and tokenizers, computed by libxxhash with seed 0: the same
// digests `xxh64sum` prints, and the same as every checkpoint written before (they stay valid).
#pragma once

#include <xxhash.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace tessera {

// Incremental XXH64 (seed 0) over libxxhash's streaming state. update() may be called with pieces of any size;
// digest() does not change the state, so it can be taken more than once. Not thread-safe; move-only.
class Xxh64 {
 public:
  Xxh64();
  void update(const void* data, size_t size) { XXH64_update(state_.get(), data, size); }
  uint64_t digest() const { return XXH64_digest(state_.get()); }

 private:
  struct FreeState {
    void operator()(XXH64_state_t* state) const { XXH64_freeState(state); }
  };
  std::unique_ptr<XXH64_state_t, FreeState> state_;
};

// XXH64 with seed 0 of size bytes.
inline uint64_t xxh64(const void* data, size_t size) { return XXH64(data, size, 0); }

// XXH64 with seed 0 of a whole file, and its size through size_bytes if not null. Throws CheckpointError
// naming the file when it cannot be opened or read.
uint64_t xxh64_file(const std::string& path, uint64_t* size_bytes = nullptr);

// "0123456789abcdef": 16 lower-case hex digits, as xxh64sum writes a digest.
std::string hex64(uint64_t value);

}  // namespace tessera

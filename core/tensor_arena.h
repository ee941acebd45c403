// TensorArena: plans many tensors into one allocation. Reserve every tensor first, then allocate once; the
// training step then runs without allocating.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "core/backend.h"

namespace tessera {

class TensorArena {
 public:
  // Reserves a tensor and returns its handle. Only before allocate().
  int reserve(DType dtype, std::initializer_list<int64_t> shape);
  // Allocates one buffer for every reserved tensor (each 64-byte aligned).
  void allocate(Backend& backend);
  Tensor get(int handle) const;
  size_t bytes() const { return total_bytes_; }

 private:
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    size_t offset;
  };
  std::vector<Entry> entries_;
  size_t total_bytes_ = 0;
  Buffer buffer_;
};

}  // namespace tessera

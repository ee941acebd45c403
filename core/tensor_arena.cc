// One-allocation tensor planning.
#include "core/tensor_arena.h"

namespace tessera {

int TensorArena::reserve(DType dtype, std::initializer_list<int64_t> shape) {
  TS_ASSERT(buffer_.data() == nullptr, "reserve after allocate");
  size_t numel = 1;
  for (int64_t d : shape) numel *= static_cast<size_t>(d);
  entries_.push_back(Entry{dtype, std::vector<int64_t>(shape), total_bytes_});
  total_bytes_ += (numel * dtype_size(dtype) + 63) / 64 * 64;
  return static_cast<int>(entries_.size()) - 1;
}

void TensorArena::allocate(Backend& backend) { buffer_ = backend.allocate(total_bytes_ > 0 ? total_bytes_ : 64); }

Tensor TensorArena::get(int handle) const {
  TS_ASSERT(handle >= 0 && handle < static_cast<int>(entries_.size()), "bad arena handle ", handle);
  const Entry& e = entries_[handle];
  const auto& s = e.shape;
  switch (s.size()) {
    case 1: return buffer_.tensor(e.offset, e.dtype, {s[0]});
    case 2: return buffer_.tensor(e.offset, e.dtype, {s[0], s[1]});
    case 3: return buffer_.tensor(e.offset, e.dtype, {s[0], s[1], s[2]});
    default: return buffer_.tensor(e.offset, e.dtype, {s[0], s[1], s[2], s[3]});
  }
}

}  // namespace tessera

// Tensor views, dtype names and sizes.
#include "core/tensor.h"

namespace tessera {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return 4;
    case DType::kBF16:
      return 2;
    case DType::kI32:
      return 4;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kI32:
      return "i32";
  }
  return "?";
}

Tensor::Tensor(void* data, DType dtype, Device device, std::initializer_list<int64_t> shape)
    : data_(data), dtype_(dtype), device_(device), ndim_(static_cast<int>(shape.size())) {
  TS_ASSERT(ndim_ >= 1 && ndim_ <= kMaxDims, "tensors have 1 to ", kMaxDims, " dims, got ", ndim_);
  int i = 0;
  for (int64_t d : shape) {
    TS_ASSERT(d >= 0, "negative dimension");
    shape_[i++] = d;
  }
}

int64_t Tensor::numel() const {
  if (ndim_ == 0) return 0;
  int64_t n = 1;
  for (int i = 0; i < ndim_; ++i) n *= shape_[i];
  return n;
}

std::string Tensor::shape_string() const {
  std::string s = "[";
  for (int i = 0; i < ndim_; ++i) s += (i ? ", " : "") + std::to_string(shape_[i]);
  return s + "]";
}

Tensor Tensor::view(std::initializer_list<int64_t> shape) const {
  Tensor t(data_, dtype_, device_, shape);
  TS_ASSERT(t.numel() == numel(), "view ", t.shape_string(), " of ", shape_string());
  return t;
}

Tensor Tensor::front(std::initializer_list<int64_t> shape) const {
  Tensor t(data_, dtype_, device_, shape);
  TS_ASSERT(t.numel() <= numel(), "front ", t.shape_string(), " of ", shape_string());
  return t;
}

Tensor Tensor::slice_from(int64_t offset, std::initializer_list<int64_t> shape) const {
  Tensor t(static_cast<char*>(data_) + offset * static_cast<int64_t>(dtype_size(dtype_)), dtype_, device_, shape);
  TS_ASSERT(offset >= 0 && offset + t.numel() <= numel(), "elements [", offset, ", ", offset + t.numel(), ") of ",
            shape_string());
  return t;
}

}  // namespace tessera

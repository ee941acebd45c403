// Tensor: a typed, shaped view of memory on one device.
//
// A Tensor does not own its memory. Memory is owned by a Buffer (allocated through a Backend, once, when a
// model or optimizer plans its storage) and Tensors are carved out of it; this keeps the training step free
// of allocations. Shapes are row-major and contiguous.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/check.h"

namespace tessera {

enum class DType : uint8_t { kF32, kBF16, kI32 };
enum class Device : uint8_t { kCpu, kCuda };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

constexpr int kMaxDims = 4;

class Tensor {
 public:
  Tensor() = default;
  Tensor(void* data, DType dtype, Device device, std::initializer_list<int64_t> shape);

  void* data() const { return data_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  int ndim() const { return ndim_; }
  int64_t dim(int i) const {
    TS_ASSERT(i >= 0 && i < ndim_, "dim ", i, " of a ", ndim_, "-d tensor");
    return shape_[i];
  }
  int64_t numel() const;
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool defined() const { return data_ != nullptr; }
  std::string shape_string() const;

  // Typed access; asserts the dtype matches.
  float* f32() const {
    TS_ASSERT(dtype_ == DType::kF32, "tensor is ", dtype_name(dtype_), ", not f32");
    return static_cast<float*>(data_);
  }
  uint16_t* bf16() const {
    TS_ASSERT(dtype_ == DType::kBF16, "tensor is ", dtype_name(dtype_), ", not bf16");
    return static_cast<uint16_t*>(data_);
  }
  int32_t* i32() const {
    TS_ASSERT(dtype_ == DType::kI32, "tensor is ", dtype_name(dtype_), ", not i32");
    return static_cast<int32_t*>(data_);
  }

  // The same memory with another shape of the same element count.
  Tensor view(std::initializer_list<int64_t> shape) const;
  // The first elements of the same memory with a shape of at most this tensor's element count (e.g. the first
  // rows of an activation planned for more).
  Tensor front(std::initializer_list<int64_t> shape) const;
  // The same memory from element `offset` on, with `shape` (which must fit in what remains).
  Tensor slice_from(int64_t offset, std::initializer_list<int64_t> shape) const;

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
  int ndim_ = 0;
  std::array<int64_t, kMaxDims> shape_{};
};

}  // namespace tessera

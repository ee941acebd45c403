// Buffer ownership.
#include "core/backend.h"

namespace tessera {

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    release();
    owner_ = std::exchange(other.owner_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void Buffer::release() {
  if (data_ != nullptr) owner_->deallocate(data_);
  data_ = nullptr;
  bytes_ = 0;
}

Tensor Buffer::tensor(size_t offset_bytes, DType dtype, std::initializer_list<int64_t> shape) const {
  Tensor t(static_cast<char*>(data_) + offset_bytes, dtype, owner_->device(), shape);
  TS_ASSERT(offset_bytes + t.bytes() <= bytes_, "tensor ", t.shape_string(), " at offset ", offset_bytes,
            " overruns a buffer of ", bytes_, " bytes");
  return t;
}

void Backend::matmul_gelu_forward(Tensor out_gelu, Tensor pre_gelu, Tensor inp, Tensor weight, Tensor bias) {
  matmul_forward(pre_gelu, inp, weight, bias);
  gelu_forward(out_gelu, pre_gelu);
}

void Backend::residual_layernorm_forward(Tensor residual_out, Tensor out, Tensor mean, Tensor rstd, Tensor a, Tensor b,
                                         Tensor weight, Tensor bias, float eps) {
  add(residual_out, a, b);
  layernorm_forward(out, mean, rstd, residual_out, weight, bias, eps);
}

void Backend::residual_rmsnorm_forward(Tensor residual_out, Tensor out, Tensor rstd, Tensor a, Tensor b, Tensor weight,
                                       float eps) {
  add(residual_out, a, b);
  rmsnorm_forward(out, rstd, residual_out, weight, eps);
}

void Backend::sum_of_squares_many(const Tensor* tensors, int count, double* sums) {
  for (int i = 0; i < count; ++i) sums[i] = sum_of_squares(tensors[i]);
}

}  // namespace tessera

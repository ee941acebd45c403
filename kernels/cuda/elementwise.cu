// Elementwise kernels: one grid-stride loop each, templated on the storage type.
#include <type_traits>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/elementwise_kernels.cuh"

namespace tessera::cuda {

template <typename T>
void add(T* out, const T* a, const T* b, int64_t n, const Context& ctx) {
  if (n == 0) return;
  add_kernel<<<grid_size(n, kThreads), kThreads, 0, ctx.stream>>>(out, a, b, n);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void scale(T* t, float factor, int64_t n, const Context& ctx) {
  if (n == 0) return;
  scale_kernel<<<grid_size(n, kThreads), kThreads, 0, ctx.stream>>>(t, factor, n);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void fill(T* t, float value, int64_t n, const Context& ctx) {
  if (n == 0) return;
  T stored;  // rounded once, here on the host (__float2bfloat16_rn is a host function too)
  if constexpr (std::is_same_v<T, float>) {
    stored = value;
  } else {
    stored = __float2bfloat16_rn(value);
  }
  fill_kernel<<<grid_size(n, kThreads), kThreads, 0, ctx.stream>>>(t, stored, n);
  CUDA_CHECK_LAUNCH();
}

void fill(int32_t* t, int32_t value, int64_t n, const Context& ctx) {
  if (n == 0) return;
  fill_kernel<<<grid_size(n, kThreads), kThreads, 0, ctx.stream>>>(t, value, n);
  CUDA_CHECK_LAUNCH();
}

template <typename Dst, typename Src>
void convert(Dst* dst, const Src* src, int64_t n, const Context& ctx) {
  if (n == 0) return;
  convert_kernel<<<grid_size(n, kThreads), kThreads, 0, ctx.stream>>>(dst, src, n);
  CUDA_CHECK_LAUNCH();
}

template void add<float>(float*, const float*, const float*, int64_t, const Context&);
template void add<bf16>(bf16*, const bf16*, const bf16*, int64_t, const Context&);
template void scale<float>(float*, float, int64_t, const Context&);
template void scale<bf16>(bf16*, float, int64_t, const Context&);
template void fill<float>(float*, float, int64_t, const Context&);
template void fill<bf16>(bf16*, float, int64_t, const Context&);
template void convert<float, bf16>(float*, const bf16*, int64_t, const Context&);
template void convert<bf16, float>(bf16*, const float*, int64_t, const Context&);

}  // namespace tessera::cuda

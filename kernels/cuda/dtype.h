// Storage types of tensors on the GPU, and the dispatch from a Tensor's DType to them (Note [Precision] in
// core/backend.h): compute tensors are f32 (`float`) or bf16 (`bf16`, CUDA's __nv_bfloat16); gradients of
// parameters, statistics and optimizer state are f32.
//
// Launchers that take compute tensors are templates over the storage type T, instantiated in their .cu for
// float and bf16 only; kernels widen every load to float, compute in float and round once per store
// (storage.cuh). Host code, CudaBackend included, picks T with dispatch_compute.
#pragma once

#ifdef TESSERA_SIMT  // the test-only emulation (reduce.cuh) provides __nv_bfloat16 instead
#include "tests/simt/simt.h"
#else
#include <cuda_bf16.h>
#endif

#include <type_traits>
#include <utility>

#include "core/check.h"
#include "core/tensor.h"

namespace tessera::cuda {

using bf16 = __nv_bfloat16;

template <typename T>
struct StorageTag {
  using type = T;
};

// The DType a storage type stands for.
template <typename T>
constexpr DType dtype_of() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, bf16> || std::is_same_v<T, int32_t>);
  if constexpr (std::is_same_v<T, float>) return DType::kF32;
  if constexpr (std::is_same_v<T, bf16>) return DType::kBF16;
  return DType::kI32;
}

// The tensor's data as T*, or nullptr for an undefined (optional, left out) tensor. Asserts the dtype: the
// backend checks dtypes with user-facing messages before it gets here.
template <typename T>
T* data_as(const Tensor& t) {
  if (!t.defined()) return nullptr;
  TS_ASSERT(t.dtype() == dtype_of<T>(), "a ", dtype_name(t.dtype()), " tensor ", t.shape_string(), " used as ",
            dtype_name(dtype_of<T>()));
  return static_cast<T*>(t.data());
}

// Calls fn(StorageTag<float>{}) or fn(StorageTag<bf16>{}) for a compute dtype; `op` names the caller in the
// error for any other dtype.
template <typename Fn>
decltype(auto) dispatch_compute(DType dtype, const char* op, Fn&& fn) {
  switch (dtype) {
    case DType::kF32:
      return std::forward<Fn>(fn)(StorageTag<float>{});
    case DType::kBF16:
      return std::forward<Fn>(fn)(StorageTag<bf16>{});
    default:
      break;
  }
  TS_ASSERT(false, op, ": compute tensors are f32 or bf16, not ", dtype_name(dtype));
  return std::forward<Fn>(fn)(StorageTag<float>{});  // not reached
}

}  // namespace tessera::cuda

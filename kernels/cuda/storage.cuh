// Device-side loads and stores of the storage types of dtype.h: every load widens to float, every store rounds
// once (to nearest even for bf16). Device code only; private to kernels/cuda.
#pragma once

#ifdef TESSERA_SIMT  // the test-only emulation (reduce.cuh) provides these names instead
#include "tests/simt/simt.h"
#else
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#endif

#include "kernels/cuda/dtype.h"

namespace tessera::cuda {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float x) {
  return __float2bfloat16_rn(x);
}

// Grid-stride loop bounds, in 64-bit: `for (int64_t i = grid_start(); i < n; i += grid_stride())`.
__device__ __forceinline__ int64_t grid_start() { return blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; }
__device__ __forceinline__ int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

}  // namespace tessera::cuda

// Warp and block reductions shared by the kernels of this folder. Device code only; private to kernels/cuda.
//
// Kernel code of this folder compiles two ways: with nvcc, and as host C++ under the test-only SIMT emulation
// (tests/simt/simt.h, which provides the CUDA names instead of cuda_runtime.h where TESSERA_SIMT is defined).
#pragma once

#ifdef TESSERA_SIMT
#include "tests/simt/simt.h"
#else
#include <cuda_runtime.h>
#endif

#include <cmath>

namespace tessera::cuda {

constexpr unsigned kFullMask = 0xffffffffu;

// Declares the block's dynamic shared memory (the launch's third <<<>>> argument) as `T* name`-like storage.
#ifndef TESSERA_SIMT
#define TS_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

template <typename T>
__device__ __forceinline__ T warp_sum(T value) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(kFullMask, value, offset);
  return value;
}

__device__ __forceinline__ float warp_max(float value) {
  for (int offset = 16; offset > 0; offset >>= 1) value = fmaxf(value, __shfl_xor_sync(kFullMask, value, offset));
  return value;
}

// Sum over the block, returned to every thread. blockDim.x must be a multiple of 32 (at most 1024) and every
// thread of the block must call it. Deterministic: a fixed tree for a fixed block size.
template <typename T>
__device__ T block_sum(T value) {
  __shared__ T partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  value = warp_sum(value);
  __syncthreads();  // a previous call may still be reading partial
  if (lane == 0) partial[warp] = value;
  __syncthreads();
  value = lane < warps ? partial[lane] : T(0);
  return warp_sum(value);
}

// Max over the block, returned to every thread; same rules as block_sum.
__device__ inline float block_max(float value) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  value = warp_max(value);
  __syncthreads();
  if (lane == 0) partial[warp] = value;
  __syncthreads();
  value = lane < warps ? partial[lane] : -INFINITY;
  return warp_max(value);
}

// Blocks for a grid-stride loop over n elements with `threads` per block, capped so that huge tensors do not
// launch more blocks than the GPU can hold at once many times over.
inline unsigned grid_size(long long n, int threads, long long max_blocks = 65535) {
  long long blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks < max_blocks ? blocks : max_blocks);
}

}  // namespace tessera::cuda

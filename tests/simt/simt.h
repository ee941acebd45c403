// A small SIMT emulation that runs the custom CUDA kernels of kernels/cuda as host C++, for tests only.
//
// A launch runs the grid block by block; each thread of a block is a fiber (simt.cc) on the calling host
// thread, so a block of 1024 threads costs 1024 small stacks, not 1024 OS threads. The fibers of a block run in
// turn, each until it reaches a barrier or returns:
//   __syncthreads()      waits until every thread of the block that has not returned reaches it;
//   __shfl_*_sync()      a warp-level barrier: every lane of the warp writes its value, waits for the whole warp,
//                        reads its partner's value, waits again. A shuffle in a warp whose lanes have not all
//                        arrived (some returned, or wait at __syncthreads) aborts with a message, as does a block
//                        where no fiber can make progress (a deadlock on real hardware).
// threadIdx/blockIdx/blockDim/gridDim are set before each fiber resumes. Dynamic shared memory
// (TS_DYNAMIC_SHARED) is filled with NaN before every block; static __shared__ arrays are function-local statics,
// shared by the fibers of a block but NOT poisoned: they keep the previous block's values.
//
// Code built with TESSERA_SIMT defined (simt_kernels_test) gets this header from reduce.cuh, storage.cuh and
// dtype.h in place of cuda_runtime.h and cuda_bf16.h.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>

#include "core/bf16.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
#define __launch_bounds__(...)

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};

inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

// CUDA's bf16 storage type: the upper half of an f32, rounded to nearest even (core/bf16.h).
struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 x) { return tessera::bf16_to_f32(x.bits); }
inline __nv_bfloat16 __float2bfloat16_rn(float x) { return {tessera::f32_to_bf16(x)}; }

// Math intrinsics: the host's precise functions (the device's fast ones differ in the last bits).
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
// CUDA's integer min and max device functions.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
// Round-to-nearest arithmetic that nvcc never contracts into an FMA; the host build does not contract either.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }

namespace simt {

// The fiber scheduler's entry points; see simt.cc.
void sync_threads();
void sync_warp();
// Exchanges `bytes` bytes of `value` within the warp: returns lane `source`'s, or the caller's own if `source`
// is out of [0, 32) or past the block.
void shuffle(void* value, int bytes, int source);
// Dynamic shared memory of the running block.
void* dynamic_shared();
// Runs body() for every thread of every block of grid, with shared_bytes of dynamic shared memory per block.
void run(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body);

inline int lane_id() {
  return static_cast<int>((threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % 32);
}

template <typename T>
T shuffle_from(T value, int source) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 16);
  shuffle(&value, sizeof(T), source);
  return value;
}

}  // namespace simt

inline void __syncthreads() { simt::sync_threads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { simt::sync_warp(); }
template <typename T>
T __shfl_sync(unsigned, T value, int source, int width = 32) {
  const int lane = simt::lane_id();
  return simt::shuffle_from(value, (lane / width) * width + source % width);
}
template <typename T>
T __shfl_xor_sync(unsigned, T value, int lane_mask, int = 32) {
  return simt::shuffle_from(value, simt::lane_id() ^ lane_mask);
}
template <typename T>
T __shfl_down_sync(unsigned, T value, unsigned delta, int width = 32) {
  const int lane = simt::lane_id(), source = lane + static_cast<int>(delta);
  return simt::shuffle_from(value, source / width == lane / width ? source : lane);
}
template <typename T>
T __shfl_up_sync(unsigned, T value, unsigned delta, int width = 32) {
  const int lane = simt::lane_id(), source = lane - static_cast<int>(delta);
  return simt::shuffle_from(value, source >= 0 && source / width == lane / width ? source : lane);
}

// Dynamic shared memory as the kernels declare it (reduce.cuh defines TS_DYNAMIC_SHARED for CUDA).
#define TS_DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(::simt::dynamic_shared())

namespace simt {

// kernel<<<grid, block, shared_bytes>>>(args...), run to completion before it returns.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "wrong number of kernel arguments");
  // Arguments are converted to the parameter types once, on the host, as a CUDA launch copies them.
  std::tuple<std::decay_t<Params>...> params(static_cast<Params>(args)...);
  run(grid, block, shared_bytes, [&] { std::apply(kernel, params); });
}

}  // namespace simt

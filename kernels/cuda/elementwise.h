// Elementwise ops on CUDA: add, scale, fill and the f32 <-> bf16 conversion of copy(). Their CPU twins live in
// kernels/cpu/cpu_backend.cc. T is float or bf16 (dtype.h); arithmetic is in float, stores round once.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"
#include "kernels/cuda/dtype.h"

namespace tessera::cuda {

// out = a + b. Overwrites; out may alias a or b.
template <typename T>
void add(T* out, const T* a, const T* b, int64_t n, const Context& ctx);
// t *= factor.
template <typename T>
void scale(T* t, float factor, int64_t n, const Context& ctx);
// t = value (rounded once to T).
template <typename T>
void fill(T* t, float value, int64_t n, const Context& ctx);
void fill(int32_t* t, int32_t value, int64_t n, const Context& ctx);
// dst = src converted (f32 -> bf16 rounds to nearest even; bf16 -> f32 is exact). Dst and Src differ.
template <typename Dst, typename Src>
void convert(Dst* dst, const Src* src, int64_t n, const Context& ctx);

}  // namespace tessera::cuda

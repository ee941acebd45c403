// Elementwise ops on CUDA: add, scale, fill. Their CPU twins live in kernels/cpu/cpu_backend.cc.
#pragma once

#include <cstdint>

#include "kernels/cuda/context.h"

namespace tessera::cuda {

// out = a + b. Overwrites; out may alias a or b.
void add(float* out, const float* a, const float* b, int64_t n, const Context& ctx);
// t *= factor.
void scale(float* t, float factor, int64_t n, const Context& ctx);
// t = value.
void fill(float* t, float value, int64_t n, const Context& ctx);
void fill(int32_t* t, int32_t value, int64_t n, const Context& ctx);

}  // namespace tessera::cuda

// Vectorizable float exp and tanh for the CPU kernels' inner loops.
//
// glibc's expf/tanhf/expm1f are scalar calls, which keep GCC from vectorizing the loops around them; on the
// tiny model GELU alone spent a quarter of the step in them. These are written so `#pragma omp simd` loops
// vectorize with plain SSE2: Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial
// for e^r (the classic single-precision minimax coefficients), and the 2^n scale built in the exponent bits.
// exp_approx is within 2 ulp of exp over [-87, 88] (tested against double exp in tests/kernels_test.cc);
// tanh_approx has an absolute error below 3e-7, which is what GELU (0.5 x (1 + tanh u)) needs.
#pragma once

#include <cstdint>

namespace tessera::cpu {

inline float exp_approx(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: adding and subtracting rounds to nearest
  x = x > -87.3f ? x : -87.3f;
  x = x < 88.7f ? x : 88.7f;
  float n = (x * kLog2e + kRoundMagic) - kRoundMagic;
  float r = x - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float e = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return e * __builtin_bit_cast(float, bits);
}

inline float tanh_approx(float x) {
  // tanh x = 1 - 2 / (e^{2x} + 1); |x| >= 9 rounds to +-1 in float anyway.
  float c = x > -9.0f ? x : -9.0f;
  c = c < 9.0f ? c : 9.0f;
  return 1.0f - 2.0f / (exp_approx(2.0f * c) + 1.0f);
}

}  // namespace tessera::cpu

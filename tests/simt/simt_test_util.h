// Helpers of the SIMT kernel tests: random inputs, device-like buffers of f32 or bf16, and the comparison with
// tolerances of tests/cuda_backend_test.cc (f32's for f32 cases; at least relative 1e-2 for bf16 values).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "core/bf16.h"
#include "tests/simt/simt.h"

namespace tessera::simt_test {

using Floats = std::vector<float>;

inline Floats normal(std::mt19937& rng, int64_t n, double stddev = 1) {
  std::normal_distribution<double> distribution(0, stddev);
  Floats values(static_cast<size_t>(n));
  for (float& x : values) x = static_cast<float>(distribution(rng));
  return values;
}
inline Floats uniform(std::mt19937& rng, int64_t n, double low, double high) {
  std::uniform_real_distribution<double> distribution(low, high);
  Floats values(static_cast<size_t>(n));
  for (float& x : values) x = static_cast<float>(distribution(rng));
  return values;
}

// Values as a T tensor holds them (rounded to nearest even for bf16).
template <typename T>
Floats rounded(Floats values) {
  if constexpr (!std::is_same_v<T, float>) {
    for (float& x : values) x = round_to_bf16(x);
  }
  return values;
}

// A buffer of T elements the emulated kernels write into; `from`/`to_floats` convert at the boundary.
template <typename T>
std::vector<T> from(const Floats& values) {
  std::vector<T> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    if constexpr (std::is_same_v<T, float>) {
      out[i] = values[i];
    } else {
      out[i] = __float2bfloat16_rn(values[i]);
    }
  }
  return out;
}
template <typename T>
std::vector<T> poisoned(int64_t n) {
  return from<T>(Floats(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN()));
}
template <typename T>
Floats to_floats(const std::vector<T>& values) {
  Floats out(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    if constexpr (std::is_same_v<T, float>) {
      out[i] = values[i];
    } else {
      out[i] = __bfloat162float(values[i]);
    }
  }
  return out;
}

struct Tolerance {
  double rtol;
  double atol;
};
constexpr Tolerance kFp32{1e-5, 1e-6};  // as cuda_backend_test's

// The case's tolerance for T: f32's, or widened to one bf16 rounding (as cuda_backend_test's `tol`).
template <typename T>
Tolerance tolerance_for(Tolerance f32, double bf16_atol = 1e-3) {
  if constexpr (std::is_same_v<T, float>) return f32;
  return {std::max(f32.rtol, 1e-2), std::max(f32.atol, bf16_atol)};
}

inline ::testing::AssertionResult all_close(const Floats& got, const Floats& want, Tolerance tolerance) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << got.size() << " vs " << want.size() << " values";
  int64_t mismatches = 0;
  std::ostringstream first;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], w = want[i];
    const bool ok = g == w || std::abs(g - w) <= tolerance.atol + tolerance.rtol * std::abs(w);
    if (!ok && mismatches++ < 5) first << "\n  [" << i << "] emulated " << g << ", cpu " << w;
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << mismatches << " of " << got.size() << " values differ (rtol "
                                       << tolerance.rtol << ", atol " << tolerance.atol << ")" << first.str();
}

template <typename T>
::testing::AssertionResult all_close(const std::vector<T>& got, const Floats& want, Tolerance tolerance) {
  return all_close(to_floats(got), want, tolerance);
}

}  // namespace tessera::simt_test

// SplitMix64: a tiny, fully specified pseudo-random generator and 64-bit mixing function.
//
// The data pipeline needs random choices that are identical on every machine, compiler and standard library
// (sample order, validation split, mock data), so it never uses std::shuffle or std::*_distribution, whose
// results are implementation-defined. Everything here is plain 64-bit integer arithmetic.
#pragma once

#include <cstdint>

namespace tessera {

// The SplitMix64 output function: a bijective mix of all 64 bits. Pure, thread-safe.
constexpr uint64_t splitmix64_mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// A well-mixed 64-bit key for the pair (a, b); different pairs give unrelated keys. Pure, thread-safe.
constexpr uint64_t hash_pair(uint64_t a, uint64_t b) {
  return splitmix64_mix(splitmix64_mix(a + 0x9e3779b97f4a7c15ULL) ^ (b + 0x632be59bd9b4e019ULL));
}

// A SplitMix64 stream. Not thread-safe: use one instance per thread.
class SplitMix64 {
 public:
  explicit constexpr SplitMix64(uint64_t seed) : state_(seed) {}

  // The next 64 uniformly distributed bits.
  constexpr uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return splitmix64_mix(state_);
  }

  // A uniform integer in [0, n). Precondition: n > 0. Rejection sampling, so there is no modulo bias.
  constexpr uint64_t uniform(uint64_t n) {
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r = next();
    while (r >= limit) r = next();
    return r % n;
  }

  // A uniform double in [0, 1) with 53 random bits.
  constexpr double uniform_double() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

}  // namespace tessera

// Layout-independent parameter initialization: every element's value is a function of (seed, parameter
// name, global element index) only, so any TP/PP layout starts from exactly the weights of one rank.
#pragma once

#include <cstdint>
#include <string>

namespace tessera {

// 64-bit mix (splitmix64 finalizer).
uint64_t mix64(uint64_t x);
// FNV-1a of a string, for keying streams by parameter name.
uint64_t hash_name(const std::string& name);
// A standard normal sample determined by (seed, stream, index): Box-Muller on two counter-based uniforms.
float normal_at(uint64_t seed, uint64_t stream, uint64_t index);

}  // namespace tessera

// Counter-based random numbers for initialization.
#include "core/init.h"

#include <cmath>

namespace tessera {

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t hash_name(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

float normal_at(uint64_t seed, uint64_t stream, uint64_t index) {
  uint64_t base = mix64(mix64(seed) ^ mix64(stream + 0x632be59bd9b4e019ULL) ^ index * 0xd1b54a32d192ed03ULL);
  uint64_t a = mix64(base), b = mix64(base ^ 0xa0761d6478bd642fULL);
  // Uniforms in (0, 1] and [0, 1) from the top 53 bits.
  double u1 = (static_cast<double>(a >> 11) + 1.0) * (1.0 / 9007199254740992.0);
  double u2 = static_cast<double>(b >> 11) * (1.0 / 9007199254740992.0);
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
}

}  // namespace tessera

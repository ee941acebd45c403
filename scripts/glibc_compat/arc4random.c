// arc4random, arc4random_buf and arc4random_uniform for a glibc older than 2.36, which added them: the GPU bundle
// (scripts/gpu_bundle.sh) preloads this library there, because Debian 12's libstdc++ and libevent call them
// (scripts/glibc_compat.py says how the references are rebound). The bytes come from the kernel's getrandom(2)
// (glibc 2.25 and newer), as glibc's own arc4random falls back to. Exported without a symbol version, so
// references to arc4random@GLIBC_2.36 bind to these.
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/types.h>

void arc4random_buf(void* buffer, size_t n) {
  unsigned char* p = buffer;
  while (n > 0) {
    const ssize_t got = getrandom(p, n, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      abort();  // as glibc's arc4random does when no randomness is available
    }
    p += got;
    n -= (size_t)got;
  }
}

uint32_t arc4random(void) {
  uint32_t x;
  arc4random_buf(&x, sizeof x);
  return x;
}

// Uniform in [0, bound) without modulo bias: draws below 2^32 mod bound are rejected.
uint32_t arc4random_uniform(uint32_t bound) {
  if (bound < 2) return 0;
  const uint32_t floor = -bound % bound;
  for (;;) {
    const uint32_t r = arc4random();
    if (r >= floor) return r % bound;
  }
}

// VmRSS and VmHWM from /proc/self/status.
#include "launcher/run/process_memory.h"

#include <cstdio>
#include <cstring>

namespace tessera {

ProcessMemory process_memory() {
  ProcessMemory m;
  std::FILE* status = std::fopen("/proc/self/status", "r");
  if (status == nullptr) return m;
  char line[256];
  while (std::fgets(line, sizeof(line), status) != nullptr) {
    long long kib = 0;
    if (std::sscanf(line, "VmRSS: %lld kB", &kib) == 1) m.rss_bytes = kib * 1024;
    if (std::sscanf(line, "VmHWM: %lld kB", &kib) == 1) m.peak_bytes = kib * 1024;
  }
  std::fclose(status);
  return m;
}

ProcessMemory startup_memory() {
  static const ProcessMemory at_startup = process_memory();
  return at_startup;
}

}  // namespace tessera

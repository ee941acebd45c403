// This process's resident memory as Linux reports it (/proc/self/status): what `tessera train` reports as a rank's
// peak memory on CPU, and the baseline `tessera plan --gpu cpu` measures of itself (docs/planner.md, "Memory
// model").
#pragma once

#include <cstdint>

namespace tessera {

struct ProcessMemory {
  int64_t rss_bytes = 0;   // VmRSS: resident now (anonymous, file-backed and shared pages this process touched)
  int64_t peak_bytes = 0;  // VmHWM: the largest VmRSS so far
};

// Reads /proc/self/status; zeros where it cannot (not Linux). Never throws. Thread-safe.
ProcessMemory process_memory();

// The process's memory before it did any work of its own: the binary, its shared libraries and their static
// initialisation (docs/planner.md, "process" in the memory model). The first call records it; `tessera`'s main
// calls it first thing, before MPI_Init, so that later calls return that record. Not thread-safe on first call.
ProcessMemory startup_memory();

}  // namespace tessera

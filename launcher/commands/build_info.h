// What this tessera binary is: its version, the commit it was built from and the build's compiler, CUDA, cuDNN
// and NCCL versions and GPU architectures, for `tessera --version` and bug reports.
#pragma once

#include <string>

namespace tessera {

// Several lines, e.g. "tessera 0.4.0 (commit 27d7f23c0a1b)\ncompiler: GNU 12.2.0\nCUDA: toolkit 13.0 ...".
// Every value comes from CMake or a library header's version macros at build time.
std::string build_info();

}  // namespace tessera

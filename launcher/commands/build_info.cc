// The build's description. CMake passes the version, commit, compiler and CUDA architectures as
// TESSERA_BUILD_* definitions on this file only (launcher/commands/CMakeLists.txt), so that a new commit
// recompiles one file; the library versions are the macros of the headers this build compiled against.
#include "launcher/commands/build_info.h"

#include <google/protobuf/stubs/common.h>
#include <mpi.h>

#include <CLI/Version.hpp>

#ifdef TESSERA_HAS_CUDA
#include <cuda_runtime_api.h>
#endif
#ifdef TESSERA_HAS_CUDNN
#include <cudnn_version.h>
#endif
#ifdef TESSERA_HAS_NCCL
#include <nccl.h>
#endif

#include "core/check.h"

namespace tessera {

std::string build_info() {
  std::string text = str_cat("tessera ", TESSERA_BUILD_VERSION);
  const std::string commit = TESSERA_BUILD_COMMIT;
  text += commit.empty() ? " (commit unknown: not built from a git checkout)\n" : str_cat(" (commit ", commit, ")\n");
  text += str_cat("compiler: ", TESSERA_BUILD_COMPILER, ", ", TESSERA_BUILD_TYPE, " build\n");
#ifdef TESSERA_HAS_CUDA
  // CUDART_VERSION is 1000 * major + 10 * minor.
  text += str_cat("CUDA: toolkit ", CUDART_VERSION / 1000, ".", CUDART_VERSION % 1000 / 10, " (nvcc ",
                  TESSERA_BUILD_CUDA_COMPILER, "), GPU architectures ", TESSERA_BUILD_CUDA_ARCHITECTURES, "\n");
#ifdef TESSERA_HAS_CUDNN
  text += str_cat("cuDNN: ", CUDNN_MAJOR, ".", CUDNN_MINOR, ".", CUDNN_PATCHLEVEL, "\n");
#else
  text += "cuDNN: not built (attention runs on the custom kernels)\n";
#endif
#ifdef TESSERA_HAS_NCCL
  text += str_cat("NCCL: ", NCCL_MAJOR, ".", NCCL_MINOR, ".", NCCL_PATCH, "\n");
#else
  text += "NCCL: not built (GPU ranks communicate through MPI with host staging)\n";
#endif
#else
  text += "CUDA: not built (CPU only)\n";
#endif
  text += str_cat("libraries: protobuf ", GOOGLE_PROTOBUF_VERSION / 1000000, ".", GOOGLE_PROTOBUF_VERSION / 1000 % 1000,
                  ".", GOOGLE_PROTOBUF_VERSION % 1000, ", CLI11 ", CLI11_VERSION,
#ifdef OPEN_MPI
                  ", Open MPI ", OMPI_MAJOR_VERSION, ".", OMPI_MINOR_VERSION, ".", OMPI_RELEASE_VERSION,
#endif
                  " (MPI ", MPI_VERSION, ".", MPI_SUBVERSION, ")\n");
  return text;
}

}  // namespace tessera

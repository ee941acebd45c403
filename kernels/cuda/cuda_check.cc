// Messages of the GPU check macros.
#include "kernels/cuda/cuda_check.h"

#include <string>

namespace tessera::cuda {

namespace {

std::string message(const char* library, int code, const char* text, const char* statement, const char* file,
                    int line) {
  const std::string& label = process_label();
  return str_cat(library, " error ", code, " (", text != nullptr ? text : "no description", ") in `", statement,
                 "` at ", file, ":", line, label.empty() ? "" : " (" + label + ")");
}

}  // namespace

void throw_cuda_error(const char* library, int code, const char* text, const char* statement, const char* file,
                      int line) {
  throw CudaError(message(library, code, text, statement, file, line));
}

void throw_nccl_error(const char* library, int code, const char* text, const char* statement, const char* file,
                      int line) {
  throw CommError(message(library, code, text, statement, file, line));
}

}  // namespace tessera::cuda

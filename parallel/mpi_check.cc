// Error text for failed MPI calls.
#include "parallel/mpi_check.h"

#include "core/check.h"

namespace tessera {

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return str_cat("MPI error code ", code);
  return std::string(text, static_cast<size_t>(length));
}

void throw_mpi_error(int code, const char* call, const char* file, int line) {
  const std::string& label = process_label();
  throw CommError(str_cat(call, " failed at ", file, ":", line, ": ", mpi_error_string(code), label.empty() ? "" : " (",
                          label, label.empty() ? "" : ")"));
}

}  // namespace tessera

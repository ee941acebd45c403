// MPI_CHECK: turns a failed MPI call into a CommError that says which call, where, and on which rank.
//
// Requires MPI_ERRORS_RETURN on the communicator the call uses (MpiEnvironment sets it on the world, from
// which derived communicators inherit it, and MpiProcessGroup sets it on its own); with the default
// MPI_ERRORS_ARE_FATAL the MPI library aborts before MPI_CHECK sees the error.
#pragma once

#include <mpi.h>

#include <string>

namespace tessera {

// The MPI library's text for an error code ("MPI_ERR_TRUNCATE: message truncated").
std::string mpi_error_string(int code);

// Throws CommError naming the call, the MPI error text, file:line and process_label(). Out of line, so that
// MPI_CHECK adds only a comparison to the success path.
[[noreturn]] void throw_mpi_error(int code, const char* call, const char* file, int line);

}  // namespace tessera

// MPI_CHECK(call): evaluates call once; throws CommError unless it returned MPI_SUCCESS.
#define MPI_CHECK(call)                                                                                   \
  do {                                                                                                    \
    const int ts_mpi_code_ = (call);                                                                      \
    if (ts_mpi_code_ != MPI_SUCCESS) ::tessera::throw_mpi_error(ts_mpi_code_, #call, __FILE__, __LINE__); \
  } while (0)

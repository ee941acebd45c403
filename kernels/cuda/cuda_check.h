// CUDA_CHECK, CUBLAS_CHECK, CUDNN_CHECK, NCCL_CHECK: a failed GPU library call becomes a typed Tessera error
// that names the statement, file:line, the library's own text for the status, and this process (rank and
// host, from tessera::process_label()).
//
// All four are generated from one generic macro, TS_GPU_CHECK. Each evaluates its argument exactly once and
// costs one comparison on the success path; the message is built out of line. This header includes only the
// CUDA runtime: a file that uses CUBLAS_CHECK, CUDNN_CHECK or NCCL_CHECK includes that library's header itself
// (the macros name its status type and error-string function only where they are expanded). CUBLAS_CHECK
// takes its text from cuBLASLt, the only part of cuBLAS Tessera links.
//
// Kernel launches do not return a status: follow every launch with CUDA_CHECK_LAUNCH(), which reports a bad
// launch configuration at once (errors raised while the kernel runs surface at the next synchronizing call).
#pragma once

#include <cuda_runtime.h>

#include "core/check.h"

namespace tessera {

// A CUDA, cuBLAS or cuDNN call failed (a bad launch, an illegal address, out of device memory, no usable GPU).
class CudaError : public Error {
 public:
  using Error::Error;
};

namespace cuda {

// Throws CudaError: "<library> error <code> (<text>) in `<statement>` at <file>:<line> (<process label>)".
[[noreturn]] void throw_cuda_error(const char* library, int code, const char* text, const char* statement,
                                   const char* file, int line);
// The same message, thrown as CommError: NCCL failures are communication failures for the launcher.
[[noreturn]] void throw_nccl_error(const char* library, int code, const char* text, const char* statement,
                                   const char* file, int line);

}  // namespace cuda
}  // namespace tessera

// TS_GPU_CHECK(call, success, error_string, thrower, library): evaluates call once; unless it returned
// `success`, calls thrower(library, code, error_string(code), "call", __FILE__, __LINE__).
#define TS_GPU_CHECK(call, success, error_string, thrower, library)                                                \
  do {                                                                                                             \
    const auto ts_gpu_status_ = (call);                                                                            \
    if (ts_gpu_status_ != (success)) {                                                                             \
      thrower(library, static_cast<int>(ts_gpu_status_), error_string(ts_gpu_status_), #call, __FILE__, __LINE__); \
    }                                                                                                              \
  } while (0)

#define CUDA_CHECK(call) TS_GPU_CHECK(call, cudaSuccess, cudaGetErrorString, ::tessera::cuda::throw_cuda_error, "CUDA")
#define CUBLAS_CHECK(call) \
  TS_GPU_CHECK(call, CUBLAS_STATUS_SUCCESS, cublasLtGetStatusString, ::tessera::cuda::throw_cuda_error, "cuBLAS")
#define CUDNN_CHECK(call) \
  TS_GPU_CHECK(call, CUDNN_STATUS_SUCCESS, cudnnGetErrorString, ::tessera::cuda::throw_cuda_error, "cuDNN")
#define NCCL_CHECK(call) TS_GPU_CHECK(call, ncclSuccess, ncclGetErrorString, ::tessera::cuda::throw_nccl_error, "NCCL")

// After every kernel launch: reports an invalid configuration or an earlier asynchronous error.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

// Gemm: row-major fp32 matrix products through cuBLASLt, with fp32 compute (CUBLAS_COMPUTE_32F: no TF32, so
// results stay within fp32 rounding of the CPU reference), optionally batched and with a fused bias epilogue.
//
// Everything in Tessera is row-major; cuBLASLt is column-major. A row-major D[m,n] = op(A) op(B) is the
// column-major D^T[n,m] = op(B)^T op(A)^T, so run() hands cuBLASLt the operands swapped and its "transpose"
// flags unchanged: a row-major matrix with leading dimension ld is, read column-major, its own transpose.
//
// Thread-safety: one Gemm is used from one thread at a time (it caches algorithm choices).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>

#include "kernels/cuda/caching_allocator.h"

namespace tessera::cuda {

enum class GemmEpilogue {
  kNone,
  // D[i, :] += vector[:] (length n), fused into the product (cuBLASLt's BIAS epilogue).
  kBias,
  // vector[i] = sum over k of op(A)[i, k] (length m), written (not accumulated) next to the product
  // (cuBLASLt's BGRADB epilogue): the bias gradient of a linear layer.
  kBiasGradient,
};

// D[m,n] = alpha * op(A)[m,k] op(B)[k,n] + beta * D, for each of `batch` matrices.
// A is stored row-major as [m,k] (transpose_a false) or [k,m] (true) with leading dimension lda >= its columns;
// likewise B as [k,n] or [n,k]; D as [m,n]. Batch i uses a + i*stride_a, b + i*stride_b, d + i*stride_d
// (elements). beta == 0 ignores what D held (NaN included).
struct GemmProblem {
  int64_t m = 0, n = 0, k = 0;
  int64_t batch = 1;
  const float* a = nullptr;
  int64_t lda = 0;
  int64_t stride_a = 0;
  bool transpose_a = false;
  const float* b = nullptr;
  int64_t ldb = 0;
  int64_t stride_b = 0;
  bool transpose_b = false;
  float* d = nullptr;
  int64_t ldd = 0;
  int64_t stride_d = 0;
  float alpha = 1.0f;
  float beta = 0.0f;
  GemmEpilogue epilogue = GemmEpilogue::kNone;
  float* vector = nullptr;  // the bias (read) or bias gradient (written) of the epilogue; batch must be 1
};

class Gemm {
 public:
  // Creates the cuBLASLt handle on the calling thread's current device and a 32 MiB workspace from allocator
  // (which must outlive this object).
  explicit Gemm(CachingAllocator& allocator);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // Issues the product to `stream` and returns at once. Throws CudaError when cuBLASLt has no algorithm for
  // it; use try_run() for an epilogue that may be unsupported.
  void run(const GemmProblem& problem, cudaStream_t stream);
  // As run(), but returns false, having issued nothing, when cuBLASLt offers no algorithm for this problem
  // (for example an epilogue on an unaligned bias vector). The answer is cached per problem shape.
  bool try_run(const GemmProblem& problem, cudaStream_t stream);

 private:
  // Everything the choice of algorithm depends on: shapes, strides, flags and the alignments of the pointers.
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int,
                         int, int, int, int, int, int>;
  struct Choice {
    bool supported = false;
    cublasLtMatmulAlgo_t algorithm{};
  };

  CachingAllocator& allocator_;
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, Choice> choices_;
};

}  // namespace tessera::cuda

// Gemm: row-major matrix products through cuBLASLt, f32 or bf16 operands, always with f32 compute and f32
// scale factors (CUBLAS_COMPUTE_32F: no TF32, so f32 results stay within f32 rounding of the CPU reference and
// bf16 products are accumulated in f32 and rounded once), optionally batched and with a fused epilogue.
// The combinations Tessera uses (Note [Precision] in core/backend.h): A, B and D all f32; A and B bf16 with D
// bf16 (forward products, input gradients); A and B bf16 with D f32 and beta = 1 (weight gradients accumulating
// into f32 parameter gradients).
//
// Everything in Tessera is row-major; cuBLASLt is column-major. A row-major D[m,n] = op(A) op(B) is the
// column-major D^T[n,m] = op(B)^T op(A)^T, so run() hands cuBLASLt the operands swapped and its "transpose"
// flags unchanged: a row-major matrix with leading dimension ld is, read column-major, its own transpose. That
// mapping is plan_lt_matmul (gemm_plan.h), pure host code tested without a GPU (gemm_plan_test).
//
// Thread-safety: one Gemm is used from one thread at a time (it caches algorithm choices).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <array>
#include <compare>
#include <cstdint>
#include <map>

#include "kernels/cuda/caching_allocator.h"
#include "kernels/cuda/gemm_plan.h"

namespace tessera::cuda {

// D[m,n] = alpha * op(A)[m,k] op(B)[k,n] + beta * D, for each of `batch` matrices.
// A is stored row-major as [m,k] (transpose_a false) or [k,m] (true) with leading dimension lda >= its columns;
// likewise B as [k,n] or [n,k]; D as [m,n]. Batch i uses a + i*stride_a, b + i*stride_b, d + i*stride_d
// (elements). beta == 0 ignores what D held (NaN included). Types are CUDA_R_32F or CUDA_R_16BF; A and B share
// one type. The shape fields (GemmGeometry, gemm_plan.h) decide the cuBLASLt call (plan_lt_matmul).
struct GemmProblem : GemmGeometry {
  explicit GemmProblem(const GemmGeometry& geometry = {}) : GemmGeometry(geometry) {}
  const void* a = nullptr;
  cudaDataType_t a_type = CUDA_R_32F;
  const void* b = nullptr;
  cudaDataType_t b_type = CUDA_R_32F;
  void* d = nullptr;
  cudaDataType_t d_type = CUDA_R_32F;
  float alpha = 1.0f;
  float beta = 0.0f;
  // The bias (read) or bias gradient (written) of an epilogue, of D's type (cuBLASLt requires it); batch must
  // be 1.
  void* vector = nullptr;
  // kGeluBias only: the pre-activation output, of D's type, row-major [m, n] with leading dimension ld_aux.
  void* aux = nullptr;
};

// The cuBLASLt type of a storage type of dtype.h's (float or bf16), for GemmProblem.
template <typename T>
constexpr cudaDataType_t gemm_type() {
  return sizeof(T) == 4 ? CUDA_R_32F : CUDA_R_16BF;
}

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

  // How many products so far had `epilogue` fused (try_run or run returned true with it), and how many were
  // refused it (try_run returned false: the caller's fallback ran). Tells tests and diagnostics which path ran.
  int64_t epilogues_taken(GemmEpilogue epilogue) const { return taken_[static_cast<size_t>(epilogue)]; }
  int64_t epilogues_refused(GemmEpilogue epilogue) const { return refused_[static_cast<size_t>(epilogue)]; }

 private:
  // Everything the choice of algorithm depends on: shapes, strides, types, flags and the alignments of the
  // pointers.
  struct Key {
    int64_t m, n, k, batch, lda, ldb, ldd, ld_aux, stride_a, stride_b, stride_d;
    int a_type, b_type, d_type;
    bool transpose_a, transpose_b;
    int epilogue;
    uint32_t align_a, align_b, align_d, align_vector, align_aux;
    bool beta_nonzero;
    auto operator<=>(const Key&) const = default;
  };
  struct Choice {
    bool supported = false;
    cublasLtMatmulAlgo_t algorithm{};
  };

  CachingAllocator& allocator_;
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, Choice> choices_;
  std::array<int64_t, 4> taken_{};    // per GemmEpilogue
  std::array<int64_t, 4> refused_{};  // per GemmEpilogue
};

}  // namespace tessera::cuda

// cuBLASLt matrix products: descriptors, algorithm choice (cached) and the row-major to column-major swap.
#include "kernels/cuda/gemm.h"

#include <bit>

#include "core/check.h"
#include "kernels/cuda/cuda_check.h"

namespace tessera::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;  // what cuBLAS recommends for Hopper

// The largest power of two (up to 256) dividing the address and every stride of an operand, in bytes:
// cuBLASLt assumes 256-byte aligned operands unless told otherwise, and Tessera's views of flat buffers
// (parameters at any offset, heads at h * head_size) often are not.
uint32_t alignment(const void* ptr, int64_t ld, int64_t stride) {
  uint64_t bits = reinterpret_cast<uintptr_t>(ptr) | 256u;
  bits |= static_cast<uint64_t>(ld) * sizeof(float);
  if (stride != 0) bits |= static_cast<uint64_t>(stride) * sizeof(float);
  return static_cast<uint32_t>(uint64_t{1} << std::countr_zero(bits));
}

// RAII for the cuBLASLt descriptors of one call.
struct Descriptors {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  ~Descriptors() {
    if (preference) cublasLtMatmulPreferenceDestroy(preference);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// A column-major layout of the row-major matrix [rows, cols] with leading dimension ld: cuBLASLt sees its
// transpose, [cols, rows].
void make_layout(cublasLtMatrixLayout_t* layout, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                 int64_t stride) {
  CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(layout, CUDA_R_32F, static_cast<uint64_t>(cols), static_cast<uint64_t>(rows), ld));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                  sizeof(stride)));
  }
}

void check_problem(const GemmProblem& p) {
  TS_ASSERT(p.m >= 0 && p.n >= 0 && p.k >= 1 && p.batch >= 1, "gemm shape m=", p.m, " n=", p.n, " k=", p.k,
            " batch=", p.batch);
  TS_ASSERT(p.a != nullptr && p.b != nullptr && p.d != nullptr, "gemm operand missing");
  TS_ASSERT(p.lda >= (p.transpose_a ? p.m : p.k) && p.ldb >= (p.transpose_b ? p.k : p.n) && p.ldd >= p.n,
            "gemm leading dimensions too small");
  TS_ASSERT(p.batch == 1 || p.epilogue == GemmEpilogue::kNone, "gemm epilogues are for single products");
  TS_ASSERT(p.epilogue == GemmEpilogue::kNone || p.vector != nullptr, "gemm epilogue without its vector");
}

}  // namespace

Gemm::Gemm(CachingAllocator& allocator) : allocator_(allocator) {
  CUBLAS_CHECK(cublasLtCreate(&handle_));
  workspace_ = allocator_.allocate(kWorkspaceBytes);
  workspace_bytes_ = kWorkspaceBytes;
}

Gemm::~Gemm() {
  allocator_.free(workspace_);
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

void Gemm::run(const GemmProblem& problem, cudaStream_t stream) {
  TS_CHECK(try_run(problem, stream), CudaError, "cuBLASLt has no fp32 algorithm for a ", problem.m, "x", problem.n, "x",
           problem.k, " product (batch ", problem.batch, ")");
}

bool Gemm::try_run(const GemmProblem& p, cudaStream_t stream) {
  check_problem(p);
  if (p.m == 0 || p.n == 0) return true;

  // Row-major D = op(A) op(B) is column-major D^T = op(B)^T op(A)^T: cuBLASLt's first operand is our B.
  const cublasOperation_t op_first = p.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = p.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  if (p.epilogue == GemmEpilogue::kBias) epilogue = CUBLASLT_EPILOGUE_BIAS;
  // Our op(A) is cuBLASLt's second operand ("B"); its reduction over k is BGRADB.
  if (p.epilogue == GemmEpilogue::kBiasGradient) epilogue = CUBLASLT_EPILOGUE_BGRADB;

  const uint32_t align_a = alignment(p.a, p.lda, p.batch > 1 ? p.stride_a : 0);
  const uint32_t align_b = alignment(p.b, p.ldb, p.batch > 1 ? p.stride_b : 0);
  const uint32_t align_d = alignment(p.d, p.ldd, p.batch > 1 ? p.stride_d : 0);
  const int align_vector = p.vector != nullptr ? static_cast<int>(alignment(p.vector, 0, 0)) : 0;
  // An epilogue vector that is not 16-byte aligned is refused here: cuBLASLt has no preference to declare it.
  if (p.epilogue != GemmEpilogue::kNone && align_vector < 16) return false;

  Descriptors desc;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof(op_first)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof(op_second)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
  if (p.epilogue != GemmEpilogue::kNone) {
    const void* vector = p.vector;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &vector, sizeof(vector)));
    const cudaDataType_t vector_type = CUDA_R_32F;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &vector_type,
                                                sizeof(vector_type)));
  }
  // Stored shapes (row-major) of B, A and D.
  make_layout(&desc.a, p.transpose_b ? p.n : p.k, p.transpose_b ? p.k : p.n, p.ldb, p.batch, p.stride_b);
  make_layout(&desc.b, p.transpose_a ? p.k : p.m, p.transpose_a ? p.m : p.k, p.lda, p.batch, p.stride_a);
  make_layout(&desc.d, p.m, p.n, p.ldd, p.batch, p.stride_d);

  const Key key{p.m,
                p.n,
                p.k,
                p.batch,
                p.lda,
                p.ldb,
                p.ldd,
                p.stride_a,
                p.stride_b,
                p.stride_d,
                p.transpose_a,
                p.transpose_b,
                static_cast<int>(p.epilogue),
                static_cast<int>(align_a),
                static_cast<int>(align_b),
                static_cast<int>(align_d),
                p.beta == 0.0f ? 0 : 1};
  auto it = choices_.find(key);
  if (it == choices_.end()) {
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&desc.preference));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &workspace_bytes_, sizeof(workspace_bytes_)));
    // cuBLASLt's A is our B, its B our A; C and D are both our D.
    const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> alignments[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_b},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_a},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_d},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d}};
    for (const auto& [attribute, value] : alignments) {
      CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.preference, attribute, &value, sizeof(value)));
    }
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(handle_, desc.op, desc.a, desc.b, desc.d, desc.d,
                                                                 desc.preference, 1, &result, &found);
    Choice choice;
    if (status == CUBLAS_STATUS_SUCCESS && found > 0) {
      choice.supported = true;
      choice.algorithm = result.algo;
    } else if (p.epilogue == GemmEpilogue::kNone && status != CUBLAS_STATUS_NOT_SUPPORTED &&
               status != CUBLAS_STATUS_SUCCESS) {
      CUBLAS_CHECK(status);  // a plain product cuBLASLt rejects: report its reason (an epilogue falls back instead)
    }
    it = choices_.emplace(key, choice).first;
  }
  if (!it->second.supported) return false;

  // cuBLASLt's C (read when beta != 0) and D are both our D.
  CUBLAS_CHECK(cublasLtMatmul(handle_, desc.op, &p.alpha, p.b, desc.a, p.a, desc.b, &p.beta, p.d, desc.d, p.d, desc.d,
                              &it->second.algorithm, workspace_, workspace_bytes_, stream));
  return true;
}

}  // namespace tessera::cuda

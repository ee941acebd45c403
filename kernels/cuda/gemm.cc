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
uint32_t alignment(const void* ptr, int64_t ld, int64_t stride, size_t element_bytes) {
  uint64_t bits = reinterpret_cast<uintptr_t>(ptr) | 256u;
  bits |= static_cast<uint64_t>(ld) * element_bytes;
  if (stride != 0) bits |= static_cast<uint64_t>(stride) * element_bytes;
  return static_cast<uint32_t>(uint64_t{1} << std::countr_zero(bits));
}

size_t element_bytes(cudaDataType_t type) {
  TS_ASSERT(type == CUDA_R_32F || type == CUDA_R_16BF, "gemm operands are f32 or bf16, not cudaDataType ",
            static_cast<int>(type));
  return type == CUDA_R_32F ? 4 : 2;
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

// The cuBLASLt layout of a planned operand (gemm_plan.h): already column-major.
void make_layout(cublasLtMatrixLayout_t* layout, cudaDataType_t type, const LtLayout& planned) {
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(layout, type, static_cast<uint64_t>(planned.rows),
                                          static_cast<uint64_t>(planned.cols), planned.ld));
  if (planned.batch > 1) {
    const int32_t count = static_cast<int32_t>(planned.batch);
    const int64_t stride = planned.stride;
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                  sizeof(stride)));
  }
}

cublasLtEpilogue_t lt_epilogue(LtEpilogue epilogue) {
  switch (epilogue) {
    case LtEpilogue::kBias:
      return CUBLASLT_EPILOGUE_BIAS;
    case LtEpilogue::kGeluAuxBias:
      return CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    case LtEpilogue::kBgradA:
      return CUBLASLT_EPILOGUE_BGRADA;
    case LtEpilogue::kBgradB:
      return CUBLASLT_EPILOGUE_BGRADB;
    case LtEpilogue::kDefault:
      break;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

void check_problem(const GemmProblem& p) {
  TS_ASSERT(p.m >= 0 && p.n >= 0 && p.k >= 1 && p.batch >= 1, "gemm shape m=", p.m, " n=", p.n, " k=", p.k,
            " batch=", p.batch);
  TS_ASSERT(p.a != nullptr && p.b != nullptr && p.d != nullptr, "gemm operand missing");
  TS_ASSERT(p.lda >= (p.transpose_a ? p.m : p.k) && p.ldb >= (p.transpose_b ? p.k : p.n) && p.ldd >= p.n,
            "gemm leading dimensions too small");
  TS_ASSERT(p.batch == 1 || p.epilogue == GemmEpilogue::kNone, "gemm epilogues are for single products");
  TS_ASSERT(p.epilogue == GemmEpilogue::kNone || p.vector != nullptr, "gemm epilogue without its vector");
  TS_ASSERT(p.epilogue != GemmEpilogue::kGeluBias || (p.aux != nullptr && p.ld_aux >= p.n),
            "gemm GELU epilogue without its pre-activation output");
  TS_ASSERT(p.a_type == p.b_type, "gemm A and B of different types");
  TS_ASSERT(p.d_type == CUDA_R_32F || p.d_type == p.a_type, "gemm: f32 operands with a bf16 result");
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
  TS_CHECK(try_run(problem, stream), CudaError, "cuBLASLt has no algorithm for a ", problem.m, "x", problem.n, "x",
           problem.k, " product (batch ", problem.batch, ", operands ", problem.a_type == CUDA_R_32F ? "f32" : "bf16",
           ", result ", problem.d_type == CUDA_R_32F ? "f32" : "bf16", ")");
}

bool Gemm::try_run(const GemmProblem& p, cudaStream_t stream) {
  check_problem(p);
  if (p.m == 0 || p.n == 0) return true;

  // The call, planned on the host (gemm_plan.h): cuBLASLt's A is our B, its B our A, C and D our D.
  const LtMatmulPlan plan = plan_lt_matmul(p);
  const cublasOperation_t transa = plan.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t transb = plan.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasLtEpilogue_t epilogue = lt_epilogue(plan.epilogue);

  const size_t ab_bytes = element_bytes(p.a_type), d_bytes = element_bytes(p.d_type);
  const uint32_t align_a = alignment(p.a, p.lda, p.batch > 1 ? p.stride_a : 0, ab_bytes);
  const uint32_t align_b = alignment(p.b, p.ldb, p.batch > 1 ? p.stride_b : 0, ab_bytes);
  const uint32_t align_d = alignment(p.d, p.ldd, p.batch > 1 ? p.stride_d : 0, d_bytes);
  const uint32_t align_vector = p.vector != nullptr ? alignment(p.vector, 0, 0, d_bytes) : 0;
  const uint32_t align_aux = p.aux != nullptr ? alignment(p.aux, p.ld_aux, 0, d_bytes) : 0;
  // An epilogue vector or aux matrix that is not 16-byte aligned is refused here: cuBLASLt has no preference to
  // declare their alignment. cuBLASLt's documented rule for the GELU input matrix: ld divisible by 8.
  const auto refuse = [&] {
    ++refused_[static_cast<size_t>(p.epilogue)];
    return false;
  };
  if (p.epilogue != GemmEpilogue::kNone && align_vector < 16) return refuse();
  if (p.epilogue == GemmEpilogue::kGeluBias && (align_aux < 16 || plan.aux_ld % 8 != 0)) return refuse();

  Descriptors desc;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSA, &transa, sizeof(transa)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_TRANSB, &transb, sizeof(transb)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
  if (p.epilogue != GemmEpilogue::kNone) {
    const void* vector = p.vector;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &vector, sizeof(vector)));
    // The bias (and bias gradient) vector has D's type, as cuBLASLt requires for these type combinations.
    const int32_t vector_type = p.d_type;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &vector_type,
                                                sizeof(vector_type)));
  }
  if (p.epilogue == GemmEpilogue::kGeluBias) {
    // Our row-major aux [m, n] is cuBLASLt's column-major [n, m]: its "rows of the output" are our n, which is
    // what ld_aux must be at least (check_problem). Its type defaults to D's.
    const void* aux = p.aux;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
    const int64_t ld_aux = plan.aux_ld;
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(desc.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld_aux, sizeof(ld_aux)));
  }
  // Pointer, type and alignment of the Tessera operand behind each planned one.
  const auto pointer = [&p](const LtLayout& l) {
    return l.source == GemmOperand::kA ? p.a : l.source == GemmOperand::kB ? p.b : p.d;
  };
  const auto type = [&p](const LtLayout& l) {
    return l.source == GemmOperand::kA ? p.a_type : l.source == GemmOperand::kB ? p.b_type : p.d_type;
  };
  const auto align = [&](const LtLayout& l) {
    return l.source == GemmOperand::kA ? align_a : l.source == GemmOperand::kB ? align_b : align_d;
  };
  make_layout(&desc.a, type(plan.a), plan.a);
  make_layout(&desc.b, type(plan.b), plan.b);
  make_layout(&desc.d, type(plan.d), plan.d);

  const Key key{p.m,
                p.n,
                p.k,
                p.batch,
                p.lda,
                p.ldb,
                p.ldd,
                p.epilogue == GemmEpilogue::kGeluBias ? p.ld_aux : 0,
                p.stride_a,
                p.stride_b,
                p.stride_d,
                static_cast<int>(p.a_type),
                static_cast<int>(p.b_type),
                static_cast<int>(p.d_type),
                p.transpose_a,
                p.transpose_b,
                static_cast<int>(p.epilogue),
                align_a,
                align_b,
                align_d,
                align_vector,
                align_aux,
                p.beta != 0.0f};
  auto it = choices_.find(key);
  if (it == choices_.end()) {
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&desc.preference));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(desc.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &workspace_bytes_, sizeof(workspace_bytes_)));
    const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> alignments[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align(plan.a)},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align(plan.b)},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align(plan.c)},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align(plan.d)}};
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
  if (!it->second.supported) return refuse();

  // cuBLASLt's C (read when beta != 0) and D are both our D (one layout, desc.d).
  const cublasStatus_t run_status = cublasLtMatmul(
      handle_, desc.op, &p.alpha, pointer(plan.a), desc.a, pointer(plan.b), desc.b, &p.beta, pointer(plan.c), desc.d,
      const_cast<void*>(pointer(plan.d)), desc.d, &it->second.algorithm, workspace_, workspace_bytes_, stream);
  if (run_status != CUBLAS_STATUS_SUCCESS && p.epilogue != GemmEpilogue::kNone) {
    // An epilogue the heuristic offered but the launch refused (checked synchronously, nothing was issued):
    // remembered as unsupported, so this and later calls take the caller's fallback.
    it->second.supported = false;
    return refuse();
  }
  CUBLAS_CHECK(run_status);
  ++taken_[static_cast<size_t>(p.epilogue)];
  return true;
}

}  // namespace tessera::cuda

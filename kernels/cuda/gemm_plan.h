// GemmPlan: how Gemm (gemm.h) turns a row-major product into one cuBLASLt call, as plain host data. No CUDA
// header is needed, so the mapping (which operand cuBLASLt sees first, its transpose flags, m/n/k, the
// column-major layouts and leading dimensions, the epilogue and the lengths of its vector and aux matrix) is
// tested without a GPU: gemm_plan_test interprets a plan with cuBLASLt's documented column-major semantics and
// compares it with a naive row-major product. gemm.cc sets the real descriptors from the same plan, field by
// field, so what the test checks is what cuBLASLt is told.
//
// The mapping. Everything in Tessera is row-major, cuBLASLt is column-major, and a row-major matrix [r, c] with
// leading dimension ld, read column-major, is its own transpose [c, r] with the same ld. So the row-major
//   D[m,n] = op(A)[m,k] op(B)[k,n]
// is the column-major
//   D^T[n,m] = op(B)^T[n,k] op(A)^T[k,m]
// and cuBLASLt's first operand ("A") is Tessera's B, its second ("B") Tessera's A, with the transpose flags
// unchanged, cuBLASLt's m = our n and its n = our m. Epilogues, in cuBLASLt's terms (cublasLt.h):
//   BIAS           adds a vector of cuBLASLt's m (the rows of its D) to every column: per column of our D,
//                  length our n.
//   GELU_AUX_BIAS  the same, stores the biased result (pre-GELU) in the aux matrix (column-major, cuBLASLt's
//                  m x n, leading dimension aux_ld >= its m, divisible by 8) and GELU of it in D.
//   BGRADB         writes the sums of cuBLASLt's op(B) over k: its n of them = our m, the row sums of our op(A)
//                  (BGRADA would sum cuBLASLt's op(A) = our op(B), length our n: not what a linear layer needs).
#pragma once

#include <cstdint>

namespace tessera::cuda {

enum class GemmEpilogue {
  kNone,
  // D[i, :] += vector[:] (length n), fused into the product (cuBLASLt's BIAS epilogue).
  kBias,
  // vector[i] = sum over k of op(A)[i, k] (length m), written (not accumulated) next to the product
  // (cuBLASLt's BGRADB epilogue): the bias gradient of a linear layer. The vector has D's type.
  kBiasGradient,
  // aux[i, :] = product + vector[:] (the pre-activation, D's type, leading dimension ld_aux), and
  // D = gelu(aux) (cuBLASLt's GELU_AUX_BIAS epilogue; cublasLt.h does not say which GELU: Note [GELU epilogue]
  // in tests/cuda_backend_test.cc). cuBLASLt wants ld_aux divisible by 8 and at least n; try_run refuses the
  // problem otherwise.
  kGeluBias,
};

// The shape of a product, without its pointers and types: what its cuBLASLt call is planned from. Meanings as in
// GemmProblem (gemm.h): D[m,n] = alpha op(A)[m,k] op(B)[k,n] + beta D, row-major, A stored [m,k] or (transpose_a)
// [k,m] with leading dimension lda, B [k,n] or [n,k], D [m,n]; batch i at offsets i * stride_* (elements).
struct GemmGeometry {
  int64_t m = 0, n = 0, k = 0;
  int64_t batch = 1;
  int64_t lda = 0;
  int64_t stride_a = 0;
  bool transpose_a = false;
  int64_t ldb = 0;
  int64_t stride_b = 0;
  bool transpose_b = false;
  int64_t ldd = 0;
  int64_t stride_d = 0;
  GemmEpilogue epilogue = GemmEpilogue::kNone;
  int64_t ld_aux = 0;  // kGeluBias only
};

// Which of Tessera's operands a cuBLASLt operand is.
enum class GemmOperand { kA, kB, kD };

// cuBLASLt's epilogues that Gemm uses (the names of cublasLtEpilogue_t without the prefix).
enum class LtEpilogue { kDefault, kBias, kGeluAuxBias, kBgradA, kBgradB };

// A cuBLASLt matrix layout: `rows` x `cols`, column-major, leading dimension ld; `batch` matrices `stride`
// elements apart. `source` is the Tessera operand whose memory it describes.
struct LtLayout {
  GemmOperand source = GemmOperand::kA;
  int64_t rows = 0, cols = 0, ld = 0;
  int64_t batch = 1, stride = 0;
};

// One cuBLASLt call: D[m,n] = alpha op(A)[m,k] op(B)[k,n] + beta C, column-major, then the epilogue. C and D are
// both Tessera's D.
struct LtMatmulPlan {
  bool transpose_a = false;  // CUBLASLT_MATMUL_DESC_TRANSA: op(A) = A^T
  bool transpose_b = false;  // CUBLASLT_MATMUL_DESC_TRANSB
  int64_t m = 0, n = 0, k = 0;
  LtLayout a, b, c, d;
  LtEpilogue epilogue = LtEpilogue::kDefault;
  int64_t vector_length = 0;  // the bias (read) or bias gradient (written); 0 without an epilogue
  int64_t aux_ld = 0;         // GELU_AUX_BIAS: CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD; 0 otherwise
};

// The cuBLASLt call for a row-major product (the mapping at the top of this file). Pure; checks nothing (Gemm
// checks the problem before planning it).
inline LtMatmulPlan plan_lt_matmul(const GemmGeometry& g) {
  LtMatmulPlan plan;
  plan.transpose_a = g.transpose_b;
  plan.transpose_b = g.transpose_a;
  plan.m = g.n;
  plan.n = g.m;
  plan.k = g.k;
  const int64_t batch = g.batch;
  const auto stride = [batch](int64_t s) { return batch > 1 ? s : int64_t{0}; };
  // B stored row-major [k,n] (or [n,k]) is column-major [n,k] (or [k,n]): cuBLASLt's A, op(A) = [n,k].
  plan.a = {GemmOperand::kB, g.transpose_b ? g.k : g.n, g.transpose_b ? g.n : g.k, g.ldb, batch, stride(g.stride_b)};
  // A stored row-major [m,k] (or [k,m]) is column-major [k,m] (or [m,k]): cuBLASLt's B, op(B) = [k,m].
  plan.b = {GemmOperand::kA, g.transpose_a ? g.m : g.k, g.transpose_a ? g.k : g.m, g.lda, batch, stride(g.stride_a)};
  plan.d = {GemmOperand::kD, g.n, g.m, g.ldd, batch, stride(g.stride_d)};
  plan.c = plan.d;
  switch (g.epilogue) {
    case GemmEpilogue::kNone:
      break;
    case GemmEpilogue::kBias:
      plan.epilogue = LtEpilogue::kBias;
      plan.vector_length = plan.m;
      break;
    case GemmEpilogue::kGeluBias:
      plan.epilogue = LtEpilogue::kGeluAuxBias;
      plan.vector_length = plan.m;
      plan.aux_ld = g.ld_aux;
      break;
    case GemmEpilogue::kBiasGradient:
      // Our op(A) is cuBLASLt's op(B); its sums over k, one per column of its D.
      plan.epilogue = LtEpilogue::kBgradB;
      plan.vector_length = plan.n;
      break;
  }
  return plan;
}

// The products of a linear layer (kernels/cuda/matmul.cu), weights W[OC, C], inputs [N, C]:
//   forward       out[N,OC]   = inp[N,C] W[OC,C]^T
//   input grad    d_inp[N,C]  = d_out[N,OC] W[OC,C]
//   weight grad   d_W[OC,C]  += d_out[N,OC]^T inp[N,C]        (with BGRADB: d_bias[OC] = rows of d_out^T summed)
inline GemmGeometry linear_forward_geometry(int64_t N, int64_t C, int64_t OC) {
  GemmGeometry g;
  g.m = N;
  g.n = OC;
  g.k = C;
  g.lda = C;
  g.ldb = C;
  g.transpose_b = true;
  g.ldd = OC;
  return g;
}

inline GemmGeometry linear_input_gradient_geometry(int64_t N, int64_t C, int64_t OC) {
  GemmGeometry g;
  g.m = N;
  g.n = C;
  g.k = OC;
  g.lda = OC;
  g.ldb = C;
  g.ldd = C;
  return g;
}

inline GemmGeometry linear_weight_gradient_geometry(int64_t N, int64_t C, int64_t OC) {
  GemmGeometry g;
  g.m = OC;
  g.n = C;
  g.k = N;
  g.lda = OC;  // d_out stored [N, OC]: op(A) = d_out^T
  g.transpose_a = true;
  g.ldb = C;
  g.ldd = C;
  return g;
}

}  // namespace tessera::cuda

// The cuBLASLt calls that Gemm plans (kernels/cuda/gemm_plan.h), checked without a GPU: each plan is carried out
// by a naive interpreter of cuBLASLt's column-major semantics, written here from cublasLt.h's descriptions and
// independent of the code under test, on the very memory of Tessera's row-major operands, and compared with a
// naive row-major product computed from GemmProblem's own contract (gemm.h). The interpreter also refuses what
// cuBLASLt would (a layout whose shape does not match op() and m/n/k, a leading dimension below the rows, a
// bias of the wrong length), so a wrong swap, flag, leading dimension or epilogue (BGRADA for BGRADB) fails.
//
// cuBLASLt semantics interpreted (cublasLt.h): D = epilogue(alpha op(A) op(B) + beta C), column-major, element
// (i, j) of a layout at i + j * ld; op(X) = X^T when the operation's TRANSA/TRANSB flag says so.
//   BIAS:          bias of length m (the rows of D), added to every column before the rest of the epilogue.
//   GELU_AUX_BIAS: the same bias; the biased value goes to aux (m x n, leading dimension aux_ld >= m) and
//                  GELU of it to D (the formula is irrelevant here: tanh-GELU on both sides).
//   BGRADB:        the bias gradient of length n (the columns of D): sums of op(B) over k. (BGRADA: length m,
//                  sums of op(A) over k.)
// Cases: every product of a linear layer (matmul.cu: forward with and without bias, with the GELU epilogue,
// d_inp, d_weight with and without BGRADB) on the shapes of cuda_backend_test, odd ones included, and the
// general forms: all four transpose combinations with padded leading dimensions, batched with strides.
#include "kernels/cuda/gemm_plan.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace tessera::cuda {
namespace {

using Values = std::vector<double>;

double gelu(double x) { return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }

// The memory of one product: Tessera's operands as stored (row-major, with their leading dimensions and batch
// strides), plus the epilogue's vector and aux matrix.
struct Operands {
  Values a, b, d, vector, aux;
};

// ---- cuBLASLt's side: interpret the plan, column-major -----------------------------------------------------------

const Values& memory_of(const Operands& o, GemmOperand source) {
  return source == GemmOperand::kA ? o.a : source == GemmOperand::kB ? o.b : o.d;
}

// Element (i, j) of op(X) for layout `layout` of batch `q`; an index outside the memory is recorded in `error`.
struct OperandView {
  const Values& memory;
  const LtLayout& layout;
  bool transpose;
  int64_t q;
  std::string* error;
  double at(int64_t i, int64_t j) const {
    const int64_t r = transpose ? j : i, c = transpose ? i : j;  // element (r, c) of the stored layout
    const int64_t index = q * layout.stride + r + c * layout.ld;
    if (index < std::ssize(memory)) return memory[index];
    if (error->empty()) *error = "an operand read outside its memory";
    return NAN;
  }
};

// What cuBLASLt would refuse about layout `l` as the operand of shape rows x cols; "" if nothing.
std::string layout_error(const LtLayout& l, int64_t rows, int64_t cols, int64_t batch, const char* what) {
  const std::string name(what);
  if (l.rows != rows || l.cols != cols) {
    return name + " is " + std::to_string(l.rows) + "x" + std::to_string(l.cols) + ", the operation needs " +
           std::to_string(rows) + "x" + std::to_string(cols);
  }
  if (l.ld < l.rows) return name + ": ld " + std::to_string(l.ld) + " below its rows";
  if (l.batch != batch) return name + ": batch count differs from D's";
  return "";
}

// Carries the plan out on `o`; returns what cuBLASLt would refuse about it ("" when it is valid).
std::string run_plan(const LtMatmulPlan& plan, double alpha, double beta, Operands& o) {
  const int64_t batch = plan.d.batch;
  for (const std::string& error :
       {layout_error(plan.a, plan.transpose_a ? plan.k : plan.m, plan.transpose_a ? plan.m : plan.k, batch, "A"),
        layout_error(plan.b, plan.transpose_b ? plan.n : plan.k, plan.transpose_b ? plan.k : plan.n, batch, "B"),
        layout_error(plan.c, plan.m, plan.n, batch, "C"), layout_error(plan.d, plan.m, plan.n, batch, "D")}) {
    if (!error.empty()) return error;
  }
  if (plan.c.source != GemmOperand::kD || plan.d.source != GemmOperand::kD) return "C and D are not Tessera's D";
  const bool bias = plan.epilogue == LtEpilogue::kBias || plan.epilogue == LtEpilogue::kGeluAuxBias;
  if (bias && (plan.vector_length != plan.m || std::ssize(o.vector) != plan.m)) {
    return "BIAS needs one bias per row of D (" + std::to_string(plan.m) + ")";
  }
  if (plan.epilogue == LtEpilogue::kBgradB && (plan.vector_length != plan.n || std::ssize(o.vector) != plan.n)) {
    return "BGRADB writes one value per column of D (" + std::to_string(plan.n) + ")";
  }
  if (plan.epilogue == LtEpilogue::kBgradA && (plan.vector_length != plan.m || std::ssize(o.vector) != plan.m)) {
    return "BGRADA writes one value per row of D (" + std::to_string(plan.m) + ")";
  }
  if (plan.epilogue == LtEpilogue::kGeluAuxBias && (plan.aux_ld < plan.m || plan.aux_ld % 8 != 0)) {
    return "GELU_AUX_BIAS needs an aux ld >= the rows of D and divisible by 8";
  }
  std::string error;
  Values d = o.d;  // C is read from what D held before the call
  for (int64_t q = 0; q < batch; ++q) {
    const OperandView A{memory_of(o, plan.a.source), plan.a, plan.transpose_a, q, &error};
    const OperandView B{memory_of(o, plan.b.source), plan.b, plan.transpose_b, q, &error};
    for (int64_t j = 0; j < plan.n; ++j) {
      for (int64_t i = 0; i < plan.m; ++i) {
        double sum = 0;
        for (int64_t p = 0; p < plan.k; ++p) sum += A.at(i, p) * B.at(p, j);
        const int64_t index = q * plan.d.stride + i + j * plan.d.ld;
        if (index >= std::ssize(d)) return "D written outside its memory";
        double x = alpha * sum + (beta != 0 ? beta * o.d[index] : 0.0);
        if (bias) x += o.vector[i];
        if (plan.epilogue == LtEpilogue::kGeluAuxBias) {
          if (i + j * plan.aux_ld >= std::ssize(o.aux)) return "aux written outside its memory";
          o.aux[i + j * plan.aux_ld] = x;
          x = gelu(x);
        }
        d[index] = x;
      }
    }
    if (plan.epilogue == LtEpilogue::kBgradB) {
      for (int64_t j = 0; j < plan.n; ++j) {
        double sum = 0;
        for (int64_t p = 0; p < plan.k; ++p) sum += B.at(p, j);
        o.vector[j] = sum;
      }
    }
    if (plan.epilogue == LtEpilogue::kBgradA) {
      for (int64_t i = 0; i < plan.m; ++i) {
        double sum = 0;
        for (int64_t p = 0; p < plan.k; ++p) sum += A.at(i, p);
        o.vector[i] = sum;
      }
    }
  }
  o.d = d;
  return error;
}

// ---- Tessera's side: GemmProblem's contract, row-major ------------------------------------------------------------

void run_row_major(const GemmGeometry& g, double alpha, double beta, Operands& o) {
  const auto a = [&](int64_t q, int64_t i, int64_t p) {
    return g.transpose_a ? o.a[q * g.stride_a + p * g.lda + i] : o.a[q * g.stride_a + i * g.lda + p];
  };
  const auto b = [&](int64_t q, int64_t p, int64_t j) {
    return g.transpose_b ? o.b[q * g.stride_b + j * g.ldb + p] : o.b[q * g.stride_b + p * g.ldb + j];
  };
  for (int64_t q = 0; q < g.batch; ++q) {
    for (int64_t i = 0; i < g.m; ++i) {
      for (int64_t j = 0; j < g.n; ++j) {
        double sum = 0;
        for (int64_t p = 0; p < g.k; ++p) sum += a(q, i, p) * b(q, p, j);
        double& out = o.d[q * g.stride_d + i * g.ldd + j];
        double x = alpha * sum + (beta != 0 ? beta * out : 0.0);
        if (g.epilogue == GemmEpilogue::kBias || g.epilogue == GemmEpilogue::kGeluBias) x += o.vector[j];
        if (g.epilogue == GemmEpilogue::kGeluBias) {
          o.aux[i * g.ld_aux + j] = x;
          x = gelu(x);
        }
        out = x;
      }
    }
    if (g.epilogue == GemmEpilogue::kBiasGradient) {
      for (int64_t i = 0; i < g.m; ++i) {
        double sum = 0;
        for (int64_t p = 0; p < g.k; ++p) sum += a(q, i, p);
        o.vector[i] = sum;
      }
    }
  }
}

// ---- the comparison ----------------------------------------------------------------------------------------------

Values random_values(std::mt19937& rng, int64_t n) {
  std::uniform_int_distribution<int> small(-4, 4);  // small integers: every sum is exact in either order
  Values v(static_cast<size_t>(n));
  for (double& x : v) x = small(rng);
  return v;
}

int64_t extent(int64_t batch, int64_t stride, int64_t rows, int64_t ld) { return (batch - 1) * stride + rows * ld; }

void expect_plan_matches_row_major(const GemmGeometry& g, double alpha, double beta, const std::string& name) {
  SCOPED_TRACE(name);
  std::mt19937 rng(static_cast<uint32_t>(g.m * 131 + g.n * 17 + g.k + g.batch));
  Operands o;
  o.a = random_values(rng, extent(g.batch, g.stride_a, g.transpose_a ? g.k : g.m, g.lda));
  o.b = random_values(rng, extent(g.batch, g.stride_b, g.transpose_b ? g.n : g.k, g.ldb));
  o.d = random_values(rng, extent(g.batch, g.stride_d, g.m, g.ldd));
  if (g.epilogue == GemmEpilogue::kBias || g.epilogue == GemmEpilogue::kGeluBias) o.vector = random_values(rng, g.n);
  if (g.epilogue == GemmEpilogue::kBiasGradient) o.vector = Values(static_cast<size_t>(g.m), NAN);
  if (g.epilogue == GemmEpilogue::kGeluBias) o.aux = Values(static_cast<size_t>(g.m * g.ld_aux), NAN);
  Operands want = o, got = o;
  run_row_major(g, alpha, beta, want);
  const std::string error = run_plan(plan_lt_matmul(g), alpha, beta, got);
  ASSERT_EQ(error, "") << "cuBLASLt would refuse the plan";
  // Padding between rows (ld > columns) must stay untouched: compare whole buffers, NaN == NaN.
  const auto same = [](const Values& x, const Values& y, const char* what) {
    ASSERT_EQ(x.size(), y.size()) << what;
    for (size_t i = 0; i < x.size(); ++i) {
      if (std::isnan(x[i]) && std::isnan(y[i])) continue;
      ASSERT_NEAR(x[i], y[i], 1e-9 * (1 + std::abs(y[i]))) << what << "[" << i << "]";
    }
  };
  same(got.d, want.d, "D");
  same(got.vector, want.vector, "vector");
  same(got.aux, want.aux, "aux");
}

struct LinearShape {
  int64_t N, C, OC;
};
// cuda_backend_test's matmul shapes, and GPT-2-like ones; OC = 72 divides by 8 (the GELU epilogue's aux ld).
constexpr LinearShape kLinearShapes[] = {{1, 1, 1}, {7, 13, 37}, {37, 72, 72}, {65, 129, 211}, {16, 24, 96}};

std::string shape_name(const char* what, const LinearShape& s) {
  return std::string(what) + " N=" + std::to_string(s.N) + " C=" + std::to_string(s.C) + " OC=" + std::to_string(s.OC);
}

TEST(GemmPlanTest, LinearForwardMatchesRowMajorProduct) {
  for (const LinearShape& s : kLinearShapes) {
    GemmGeometry g = linear_forward_geometry(s.N, s.C, s.OC);
    expect_plan_matches_row_major(g, 1, 0, shape_name("forward", s));
    // The fp32 fallback of the bias: out = bias rows, then out += inp W^T (beta = 1).
    expect_plan_matches_row_major(g, 1, 1, shape_name("forward, beta 1", s));
    g.epilogue = GemmEpilogue::kBias;
    expect_plan_matches_row_major(g, 1, 0, shape_name("forward + BIAS", s));
  }
}

TEST(GemmPlanTest, LinearGeluForwardMatchesRowMajorProduct) {
  for (const LinearShape& s : kLinearShapes) {
    if (s.OC % 8 != 0) continue;  // matmul.cu passes ld_aux = OC; try_run refuses the epilogue otherwise
    GemmGeometry g = linear_forward_geometry(s.N, s.C, s.OC);
    g.epilogue = GemmEpilogue::kGeluBias;
    g.ld_aux = s.OC;
    expect_plan_matches_row_major(g, 1, 0, shape_name("forward + GELU_AUX_BIAS", s));
    g.ld_aux = s.OC + 8;  // a padded pre-activation
    expect_plan_matches_row_major(g, 1, 0, shape_name("forward + GELU_AUX_BIAS, padded aux", s));
  }
}

TEST(GemmPlanTest, LinearBackwardMatchesRowMajorProduct) {
  for (const LinearShape& s : kLinearShapes) {
    expect_plan_matches_row_major(linear_input_gradient_geometry(s.N, s.C, s.OC), 1, 0, shape_name("d_inp", s));
    GemmGeometry g = linear_weight_gradient_geometry(s.N, s.C, s.OC);
    expect_plan_matches_row_major(g, 1, 1, shape_name("d_weight (accumulated)", s));
    g.epilogue = GemmEpilogue::kBiasGradient;
    expect_plan_matches_row_major(g, 1, 1, shape_name("d_weight + BGRADB", s));
  }
}

// The general forms: every transpose combination, leading dimensions wider than the rows, alpha and beta, and
// batches with strides larger than one matrix.
TEST(GemmPlanTest, TransposedPaddedAndBatchedProductsMatchRowMajor) {
  for (const bool transpose_a : {false, true}) {
    for (const bool transpose_b : {false, true}) {
      for (const int64_t batch : {1, 3}) {
        GemmGeometry g;
        g.m = 5;
        g.n = 7;
        g.k = 3;
        g.batch = batch;
        g.transpose_a = transpose_a;
        g.transpose_b = transpose_b;
        g.lda = (transpose_a ? g.m : g.k) + 2;
        g.ldb = (transpose_b ? g.k : g.n) + 1;
        g.ldd = g.n + 3;
        g.stride_a = (transpose_a ? g.k : g.m) * g.lda + 4;
        g.stride_b = (transpose_b ? g.n : g.k) * g.ldb + 1;
        g.stride_d = g.m * g.ldd + 2;
        const std::string name = std::string("transpose_a ") + (transpose_a ? "yes" : "no") + ", transpose_b " +
                                 (transpose_b ? "yes" : "no") + ", batch " + std::to_string(batch);
        expect_plan_matches_row_major(g, 1, 0, name);
        expect_plan_matches_row_major(g, -0.5, 2, name + ", alpha -0.5, beta 2");
        if (batch == 1) {
          for (const GemmEpilogue epilogue : {GemmEpilogue::kBias, GemmEpilogue::kBiasGradient}) {
            g.epilogue = epilogue;
            expect_plan_matches_row_major(g, 1, 0, name + (epilogue == GemmEpilogue::kBias ? ", BIAS" : ", BGRADB"));
          }
        }
      }
    }
  }
}

// The interpreter is not vacuous: the plan with cuBLASLt's operands left in Tessera's order, a leading
// dimension of the row-major kind, or BGRADA instead of BGRADB, is refused or does not reproduce the product.
TEST(GemmPlanTest, InterpreterRejectsWrongMappings) {
  const GemmGeometry g = linear_forward_geometry(7, 13, 37);
  std::mt19937 rng(1);
  Operands o;
  o.a = random_values(rng, 7 * 13);
  o.b = random_values(rng, 37 * 13);
  o.d = Values(7 * 37, 0);
  Operands want = o;
  run_row_major(g, 1, 0, want);
  const auto reproduces = [&](const LtMatmulPlan& plan) {
    Operands got = o;
    return run_plan(plan, 1, 0, got).empty() && got.d == want.d;
  };
  ASSERT_TRUE(reproduces(plan_lt_matmul(g)));
  LtMatmulPlan unswapped = plan_lt_matmul(g);
  std::swap(unswapped.a, unswapped.b);
  std::swap(unswapped.m, unswapped.n);
  EXPECT_FALSE(reproduces(unswapped));
  std::swap(unswapped.transpose_a, unswapped.transpose_b);
  EXPECT_FALSE(reproduces(unswapped));
  LtMatmulPlan flags_swapped = plan_lt_matmul(g);
  std::swap(flags_swapped.transpose_a, flags_swapped.transpose_b);
  EXPECT_FALSE(reproduces(flags_swapped));
  LtMatmulPlan d_rows = plan_lt_matmul(g);
  std::swap(d_rows.d.rows, d_rows.d.cols);
  d_rows.c = d_rows.d;
  EXPECT_FALSE(reproduces(d_rows));

  GemmGeometry gradient = linear_weight_gradient_geometry(7, 13, 37);
  gradient.epilogue = GemmEpilogue::kBiasGradient;
  LtMatmulPlan bgrada = plan_lt_matmul(gradient);
  bgrada.epilogue = LtEpilogue::kBgradA;
  Operands go;
  go.a = random_values(rng, 7 * 37);
  go.b = random_values(rng, 7 * 13);
  go.d = Values(37 * 13, 0);
  go.vector = Values(37, NAN);  // the contract's length: OC, one per row of d_W
  EXPECT_NE(run_plan(bgrada, 1, 0, go), "");
}

}  // namespace
}  // namespace tessera::cuda

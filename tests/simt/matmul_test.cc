// The linear layer's custom kernels (kernels/cuda/matmul_kernels.cuh) under the SIMT emulation against
// kernels/cpu/matmul, on cuda_backend_test's (N, C, OC) shapes: the bias broadcast and the bias add of the
// forward's fallbacks, and the deterministic column sums of the backward's fallback (d_bias), with matmul.cu's
// geometry. The products are cuBLASLt's and not emulated: the bias add takes the CPU's product as its input.
#include "kernels/cpu/matmul.h"

#include "kernels/cuda/matmul_kernels.cuh"
#include "tests/simt/simt_test_util.h"

namespace tessera::simt_test {
namespace {

using cuda::bf16;

template <typename T>
class SimtMatmul : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(SimtMatmul, StorageTypes);

struct Shape {
  int64_t N, C, OC;
  Tolerance tolerance;  // cuda_backend_test's, sized for the products
};
const std::vector<Shape> kShapes = {{1, 1, 1, kFp32},
                                    {7, 13, 37, kFp32},
                                    {37, 72, 72, {1e-5, 1e-5}},
                                    {65, 129, 211, {1e-4, 1e-5}},
                                    {128, 768, 333, {1e-4, 1e-4}}};

std::string name(const Shape& s) {
  return std::to_string(s.N) + "x" + std::to_string(s.C) + "x" + std::to_string(s.OC);
}

// The bias broadcast is a copy: exact. The bias add computes product + bias and rounds once (then once to T);
// the CPU copies the bias into every row and lets sgemm (beta = 1) add the product to it, which OpenBLAS does per
// block of the reduction dimension for long ones (C = 768 here), so the bias joins the sum in another place: the
// two differ by the rounding of a sum of C products, the table's tolerance for the product.
TYPED_TEST(SimtMatmul, BiasBroadcastAndAdd) {
  using T = TypeParam;
  std::mt19937 rng(81);
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(name(s));
    const Floats inp = normal(rng, s.N * s.C), weight = normal(rng, s.OC * s.C, 0.1);
    const Floats bias = rounded<T>(normal(rng, s.OC));
    Floats product(s.N * s.OC), want(s.N * s.OC);
    cpu::matmul_forward(product.data(), inp.data(), weight.data(), nullptr, s.N, s.C, s.OC);
    cpu::matmul_forward(want.data(), inp.data(), weight.data(), bias.data(), s.N, s.C, s.OC);
    const std::vector<T> bias_in = from<T>(bias);
    const unsigned blocks = cuda::grid_size(s.N * s.OC, 256);

    std::vector<T> rows = poisoned<T>(s.N * s.OC);
    simt::launch(cuda::broadcast_rows_kernel<T>, blocks, 256, 0, rows.data(), bias_in.data(), s.N, s.OC);
    Floats want_rows(s.N * s.OC);
    for (int64_t i = 0; i < s.N * s.OC; ++i) want_rows[i] = bias[i % s.OC];
    EXPECT_TRUE(all_close(rows, want_rows, {0, 0})) << "broadcast";

    std::vector<T> out = poisoned<T>(s.N * s.OC);
    simt::launch(cuda::add_bias_kernel<T>, blocks, 256, 0, out.data(), product.data(), bias_in.data(), s.N, s.OC);
    EXPECT_TRUE(all_close(out, rounded<T>(want), tolerance_for<T>(s.tolerance))) << "bias add";
  }
}

// d_bias += column sums of d_out (f32 whatever T is), accumulated onto random values. The CPU adds the N rows
// in order; the kernels add rows i = r (mod 8) of a chunk, the 8 row sums, then the chunks: another order, so the
// two sums of N <= 128 terms differ by rounding only, well inside the table's tolerances (which are sized for
// the products' longer reductions).
TYPED_TEST(SimtMatmul, ColumnSums) {
  using T = TypeParam;
  std::mt19937 rng(82);
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(name(s));
    const Floats dy = rounded<T>(normal(rng, s.N * s.OC)), inp = normal(rng, s.N * s.C), db0 = normal(rng, s.OC);
    const Floats weight = normal(rng, s.OC * s.C, 0.1);
    Floats want = db0, d_weight(s.OC * s.C, 0.0f);
    cpu::matmul_backward(nullptr, d_weight.data(), want.data(), dy.data(), inp.data(), weight.data(), s.N, s.C, s.OC);

    const std::vector<T> d_out = from<T>(dy);
    const cuda::ColumnSumChunks chunks = cuda::column_sum_chunks(s.N);
    std::vector<float> partial = poisoned<float>(chunks.count * s.OC), d_bias = db0;
    const dim3 grid(cuda::blocks_for(s.OC, cuda::kTileColumns), static_cast<unsigned>(chunks.count));
    simt::launch(cuda::column_sums_partial_kernel<T>, grid, dim3(cuda::kTileColumns, cuda::kTileRows), 0,
                 partial.data(), d_out.data(), s.N, s.OC, chunks.rows);
    simt::launch(cuda::accumulate_chunks_kernel, cuda::blocks_for(s.OC, 256), 256, 0, d_bias.data(), partial.data(),
                 chunks.count, s.OC);
    EXPECT_TRUE(all_close(d_bias, want, s.tolerance));
  }
}

}  // namespace
}  // namespace tessera::simt_test

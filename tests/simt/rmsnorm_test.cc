// RMSNorm kernels (kernels/cuda/rmsnorm_kernels.cuh) under the SIMT emulation against kernels/cpu/rmsnorm, on
// the shapes of cuda_backend_test, launched with rmsnorm.cu's geometry.
#include "kernels/cpu/rmsnorm.h"

#include "kernels/cuda/rmsnorm_kernels.cuh"
#include "tests/simt/simt_test_util.h"

namespace tessera::simt_test {
namespace {

using cuda::bf16;

template <typename T>
class SimtRmsnorm : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(SimtRmsnorm, StorageTypes);

const std::vector<std::pair<int64_t, int64_t>> kShapes = {{1, 1}, {9, 67}, {37, 72}, {300, 768}};
constexpr float kEps = 1e-5f;

TYPED_TEST(SimtRmsnorm, Forward) {
  using T = TypeParam;
  std::mt19937 rng(1);
  for (const auto& [N, C] : kShapes) {
    SCOPED_TRACE(std::to_string(N) + "x" + std::to_string(C));
    const Floats x = rounded<T>(normal(rng, N * C, 2)), w = rounded<T>(uniform(rng, C, 0.5, 1.5));
    Floats want(x.size()), want_rstd(N);
    cpu::rmsnorm_forward(want.data(), want_rstd.data(), x.data(), w.data(), kEps, N, C);
    std::vector<T> out = poisoned<T>(N * C), inp = from<T>(x), weight = from<T>(w);
    std::vector<float> rstd = poisoned<float>(N);
    simt::launch(cuda::rmsnorm_forward_kernel<T>, cuda::row_blocks(N), cuda::kRowThreads, 0, out.data(), rstd.data(),
                 inp.data(), weight.data(), kEps, N, C);
    EXPECT_TRUE(all_close(out, want, tolerance_for<T>({1e-5, 1e-5})));
    EXPECT_TRUE(all_close(rstd, want_rstd, {1e-5, 1e-5}));
  }
}

// residual_out = a + b, then RMSNorm of it; also with residual_out aliasing a.
TYPED_TEST(SimtRmsnorm, ResidualForward) {
  using T = TypeParam;
  std::mt19937 rng(2);
  for (const auto& [N, C] : kShapes) {
    for (const bool in_place : {false, true}) {
      SCOPED_TRACE(std::to_string(N) + "x" + std::to_string(C) + (in_place ? " in place" : ""));
      const Floats a = rounded<T>(normal(rng, N * C, 2)), b = rounded<T>(normal(rng, N * C));
      const Floats w = rounded<T>(uniform(rng, C, 0.5, 1.5));
      Floats sum(a.size()), want(a.size()), want_rstd(N);
      for (size_t i = 0; i < a.size(); ++i) sum[i] = a[i] + b[i];
      sum = rounded<T>(sum);
      cpu::rmsnorm_forward(want.data(), want_rstd.data(), sum.data(), w.data(), kEps, N, C);
      std::vector<T> residual = in_place ? from<T>(a) : poisoned<T>(N * C), out = poisoned<T>(N * C);
      std::vector<T> a_in = from<T>(a), b_in = from<T>(b), weight = from<T>(w);
      std::vector<float> rstd = poisoned<float>(N);
      simt::launch(cuda::residual_rmsnorm_forward_kernel<T>, cuda::row_blocks(N), cuda::kRowThreads, 0, residual.data(),
                   out.data(), rstd.data(), in_place ? residual.data() : a_in.data(), b_in.data(), weight.data(), kEps,
                   N, C);
      EXPECT_TRUE(all_close(residual, sum, tolerance_for<T>(kFp32)));
      EXPECT_TRUE(all_close(out, want, tolerance_for<T>({1e-5, 1e-5})));
      EXPECT_TRUE(all_close(rstd, want_rstd, {1e-5, 1e-5}));
    }
  }
}

// d_inp and d_weight accumulate onto random values; the launch sequence of rmsnorm.cu's rmsnorm_backward.
TYPED_TEST(SimtRmsnorm, Backward) {
  using T = TypeParam;
  std::mt19937 rng(3);
  for (const auto& [N, C] : kShapes) {
    SCOPED_TRACE(std::to_string(N) + "x" + std::to_string(C));
    const Floats x = rounded<T>(normal(rng, N * C, 2)), w = rounded<T>(uniform(rng, C, 0.5, 1.5));
    const Floats dy = rounded<T>(normal(rng, N * C)), dx0 = rounded<T>(normal(rng, N * C)), dw0 = normal(rng, C);
    Floats unused(x.size()), r(N);
    cpu::rmsnorm_forward(unused.data(), r.data(), x.data(), w.data(), kEps, N, C);
    Floats want_dx = dx0, want_dw = dw0;
    cpu::rmsnorm_backward(want_dx.data(), want_dw.data(), dy.data(), x.data(), w.data(), r.data(), N, C);

    std::vector<T> d_inp = from<T>(dx0), d_out = from<T>(dy), inp = from<T>(x), weight = from<T>(w);
    std::vector<float> d_weight = dw0;
    simt::launch(cuda::rmsnorm_backward_input_kernel<T>, cuda::row_blocks(N), cuda::kRowThreads, 0, d_inp.data(),
                 d_out.data(), inp.data(), weight.data(), r.data(), N, C);
    const int64_t column_tiles = (C + cuda::kTileColumns - 1) / cuda::kTileColumns;
    const cuda::RowChunks chunks = cuda::row_chunks_of(N);
    std::vector<float> partial = poisoned<float>(chunks.count * C);
    simt::launch(cuda::rmsnorm_backward_weight_kernel<T>,
                 dim3(static_cast<unsigned>(column_tiles), static_cast<unsigned>(chunks.count)),
                 dim3(cuda::kTileColumns, cuda::kTileRows), 0, partial.data(), d_out.data(), inp.data(), r.data(), N, C,
                 chunks.rows);
    simt::launch(cuda::rmsnorm_backward_weight_sum_kernel, static_cast<unsigned>((C + 255) / 256), 256, 0,
                 d_weight.data(), partial.data(), chunks.count, C);
    EXPECT_TRUE(all_close(d_inp, want_dx, tolerance_for<T>({1e-4, 1e-5})));
    EXPECT_TRUE(all_close(d_weight, want_dw, tolerance_for<T>({1e-4, 1e-5})));
  }
}

}  // namespace
}  // namespace tessera::simt_test

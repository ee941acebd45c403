// LayerNorm kernels (kernels/cuda/layernorm_kernels.cuh) under the SIMT emulation against kernels/cpu/layernorm:
// forward, residual + LayerNorm (also into a), and the backward with layernorm.cu's launch sequence, on the
// shapes of cuda_backend_test.

#include "kernels/cpu/layernorm.h"

#include "kernels/cuda/layernorm_kernels.cuh"
#include "tests/simt/simt_test_util.h"

namespace tessera::simt_test {
namespace {

using cuda::bf16;

template <typename T>
class SimtLayernorm : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(SimtLayernorm, StorageTypes);

const std::vector<std::pair<int64_t, int64_t>> kShapes = {{1, 1}, {9, 67}, {37, 72}, {300, 768}};
constexpr float kEps = 1e-5f;

// Inputs with a non-zero mean, as cuda_backend_test's.
template <typename T>
Floats shifted_input(std::mt19937& rng, int64_t n) {
  Floats x = normal(rng, n, 2);
  for (float& v : x) v += 0.5f;
  return rounded<T>(x);
}

TYPED_TEST(SimtLayernorm, Forward) {
  using T = TypeParam;
  std::mt19937 rng(7);
  for (const auto& [N, C] : kShapes) {
    SCOPED_TRACE(std::to_string(N) + "x" + std::to_string(C));
    const Floats x = shifted_input<T>(rng, N * C), w = rounded<T>(uniform(rng, C, 0.5, 1.5));
    const Floats b = rounded<T>(normal(rng, C));
    Floats want(x.size()), want_mean(N), want_rstd(N);
    cpu::layernorm_forward(want.data(), want_mean.data(), want_rstd.data(), x.data(), w.data(), b.data(), kEps, N, C);
    std::vector<T> out = poisoned<T>(N * C), inp = from<T>(x), weight = from<T>(w), bias = from<T>(b);
    std::vector<float> mean = poisoned<float>(N), rstd = poisoned<float>(N);
    simt::launch(cuda::layernorm_forward_kernel<T>, cuda::row_blocks(N), cuda::kRowThreads, 0, out.data(), mean.data(),
                 rstd.data(), inp.data(), weight.data(), bias.data(), kEps, N, C);
    EXPECT_TRUE(all_close(out, want, tolerance_for<T>({1e-5, 1e-5})));
    EXPECT_TRUE(all_close(mean, want_mean, {1e-5, 1e-5}));
    EXPECT_TRUE(all_close(rstd, want_rstd, {1e-5, 1e-5}));
  }
}

TYPED_TEST(SimtLayernorm, ResidualForward) {
  using T = TypeParam;
  std::mt19937 rng(8);
  for (const auto& [N, C] : kShapes) {
    for (const bool in_place : {false, true}) {
      SCOPED_TRACE(std::to_string(N) + "x" + std::to_string(C) + (in_place ? " in place" : ""));
      const Floats a = rounded<T>(normal(rng, N * C, 2)), b = rounded<T>(normal(rng, N * C));
      const Floats w = rounded<T>(uniform(rng, C, 0.5, 1.5)), bb = rounded<T>(normal(rng, C));
      Floats sum(a.size()), want(a.size()), want_mean(N), want_rstd(N);
      for (size_t i = 0; i < a.size(); ++i) sum[i] = a[i] + b[i];
      sum = rounded<T>(sum);
      cpu::layernorm_forward(want.data(), want_mean.data(), want_rstd.data(), sum.data(), w.data(), bb.data(), kEps, N,
                             C);
      std::vector<T> residual = in_place ? from<T>(a) : poisoned<T>(N * C), out = poisoned<T>(N * C);
      std::vector<T> a_in = from<T>(a), b_in = from<T>(b), weight = from<T>(w), bias = from<T>(bb);
      std::vector<float> mean = poisoned<float>(N), rstd = poisoned<float>(N);
      simt::launch(cuda::residual_layernorm_forward_kernel<T>, cuda::row_blocks(N), cuda::kRowThreads, 0,
                   residual.data(), out.data(), mean.data(), rstd.data(), in_place ? residual.data() : a_in.data(),
                   b_in.data(), weight.data(), bias.data(), kEps, N, C);
      EXPECT_TRUE(all_close(residual, sum, tolerance_for<T>(kFp32)));
      EXPECT_TRUE(all_close(out, want, tolerance_for<T>({1e-5, 1e-5})));
      EXPECT_TRUE(all_close(mean, want_mean, {1e-5, 1e-5}));
      EXPECT_TRUE(all_close(rstd, want_rstd, {1e-5, 1e-5}));
    }
  }
}

// d_inp, d_weight and d_bias accumulate onto random values.
TYPED_TEST(SimtLayernorm, Backward) {
  using T = TypeParam;
  std::mt19937 rng(9);
  for (const auto& [N, C] : kShapes) {
    SCOPED_TRACE(std::to_string(N) + "x" + std::to_string(C));
    const Floats x = shifted_input<T>(rng, N * C), w = rounded<T>(uniform(rng, C, 0.5, 1.5));
    const Floats dy = rounded<T>(normal(rng, N * C)), dx0 = rounded<T>(normal(rng, N * C));
    const Floats dw0 = normal(rng, C), db0 = normal(rng, C), zeros(C, 0.0f);
    Floats unused(x.size()), m(N), r(N);
    cpu::layernorm_forward(unused.data(), m.data(), r.data(), x.data(), w.data(), zeros.data(), kEps, N, C);
    Floats want_dx = dx0, want_dw = dw0, want_db = db0;
    cpu::layernorm_backward(want_dx.data(), want_dw.data(), want_db.data(), dy.data(), x.data(), w.data(), m.data(),
                            r.data(), N, C);

    std::vector<T> d_inp = from<T>(dx0), d_out = from<T>(dy), inp = from<T>(x), weight = from<T>(w);
    std::vector<float> d_weight = dw0, d_bias = db0;
    simt::launch(cuda::layernorm_backward_input_kernel<T>, cuda::row_blocks(N), cuda::kRowThreads, 0, d_inp.data(),
                 d_out.data(), inp.data(), weight.data(), m.data(), r.data(), N, C);
    const int64_t column_tiles = (C + cuda::kTileColumns - 1) / cuda::kTileColumns;
    const cuda::RowChunks chunks = cuda::row_chunks_of(N);
    std::vector<float> partial = poisoned<float>(chunks.count * 2 * C);
    simt::launch(cuda::layernorm_backward_params_kernel<T>,
                 dim3(static_cast<unsigned>(column_tiles), static_cast<unsigned>(chunks.count)),
                 dim3(cuda::kTileColumns, cuda::kTileRows), 0, partial.data(), d_out.data(), inp.data(), m.data(),
                 r.data(), N, C, chunks.rows);
    simt::launch(cuda::layernorm_backward_params_sum_kernel, static_cast<unsigned>((C + 255) / 256), 256, 0,
                 d_weight.data(), d_bias.data(), partial.data(), chunks.count, C);
    EXPECT_TRUE(all_close(d_inp, want_dx, tolerance_for<T>({1e-4, 1e-5})));
    EXPECT_TRUE(all_close(d_weight, want_dw, tolerance_for<T>({1e-4, 1e-5})));
    EXPECT_TRUE(all_close(d_bias, want_db, tolerance_for<T>({1e-4, 1e-5})));
  }
}

}  // namespace
}  // namespace tessera::simt_test

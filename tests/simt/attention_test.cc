// Attention kernels (kernels/cuda/attention_kernels.cuh) under the SIMT emulation against kernels/cpu/attention:
// the forward, and the backward's three launches (delta, key tiles, query tiles) in attention.cu's order, with its
// grids and dynamic shared memory (NaN-poisoned before every block: a tile read before it is loaded shows).
// Shapes: cuda_backend_test's table, (B, T, H, KV, hs) with T = 1, partial tiles (13, 37, 70), head sizes 4 to
// 128, multi-head (KV == H) and grouped-query (KV < H, Llama-1B-like 32/8 among them). The outputs start
// poisoned: every element must be written.
//
// Tolerances, from the arithmetic: a score is a dot product of hs <= 128 terms in f32, the kernel's in order,
// the CPU's through sgemm in another order; with unit-normal inputs its rounding error is a random walk of about
// sqrt(hs) u |s| (1e-6 relative at most, u = 6e-8), which the softmax passes on to the weights. An output is a
// convex combination of values of size 1, computed the same way: relative 1e-5 with an absolute 1e-6 for
// outputs near zero (kFp32's rtol), as cuda_backend_test. The backward adds a second dot product (dO V^T), the
// difference dP - D (which cancels) and sums of up to T such terms per gradient: relative 1e-4, absolute 1e-5.
// bf16 outputs get one bf16 rounding on top (relative 1e-2, absolute 1e-3).
#include "kernels/cpu/attention.h"

#include "kernels/cuda/attention_kernels.cuh"
#include "tests/simt/simt_test_util.h"

namespace tessera::simt_test {
namespace {

using cuda::bf16;

template <typename T>
class SimtAttention : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(SimtAttention, StorageTypes);

struct Shape {
  int64_t B, T, H, KV, hs;
};
const std::vector<Shape> kShapes = {{1, 1, 1, 1, 4},   {2, 13, 3, 3, 8},   {1, 64, 4, 4, 16},
                                    {2, 37, 3, 3, 24}, {1, 70, 2, 2, 128}, {2, 13, 3, 1, 8},
                                    {2, 37, 6, 2, 24}, {1, 70, 4, 1, 128}, {1, 64, 32, 8, 64}};

std::string name(const Shape& s) {
  return "B " + std::to_string(s.B) + " T " + std::to_string(s.T) + " H " + std::to_string(s.H) + " KV " +
         std::to_string(s.KV) + " hs " + std::to_string(s.hs);
}

float scale_of(int64_t hs) { return 1.0f / std::sqrt(static_cast<float>(hs)); }

TYPED_TEST(SimtAttention, Forward) {
  using T = TypeParam;
  std::mt19937 rng(61);
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(name(s));
    const int64_t N = s.B * s.T, C = s.H * s.hs, W = (s.H + 2 * s.KV) * s.hs;
    const Floats qkv = rounded<T>(normal(rng, N * W));
    Floats want(N * C), want_lse(s.B * s.H * s.T);
    cpu::attention_forward(want.data(), want_lse.data(), qkv.data(), s.B, s.T, s.H, s.KV, s.hs);
    std::vector<T> out = poisoned<T>(N * C), qkv_in = from<T>(qkv);
    std::vector<float> lse = poisoned<float>(s.B * s.H * s.T);
    simt::launch(cuda::attention_forward_kernel<T>, cuda::tile_grid(s.B, s.T, s.H), cuda::kThreads,
                 cuda::forward_shared_bytes(s.hs), out.data(), lse.data(), qkv_in.data(),
                 cuda::heads_of(s.T, s.H, s.KV, s.hs), scale_of(s.hs));
    EXPECT_TRUE(all_close(out, want, tolerance_for<T>({1e-5, 1e-6}))) << "out";
    EXPECT_TRUE(all_close(lse, want_lse, {1e-5, 1e-6})) << "lse";
  }
}

// From the same forward results on both sides: out (rounded to T) and lse of the CPU forward.
TYPED_TEST(SimtAttention, Backward) {
  using T = TypeParam;
  std::mt19937 rng(62);
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(name(s));
    const int64_t N = s.B * s.T, C = s.H * s.hs, W = (s.H + 2 * s.KV) * s.hs;
    const Floats qkv = rounded<T>(normal(rng, N * W)), dy = rounded<T>(normal(rng, N * C));
    Floats out(N * C), lse(s.B * s.H * s.T);
    cpu::attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.T, s.H, s.KV, s.hs);
    out = rounded<T>(out);
    Floats want(N * W);
    cpu::attention_backward(want.data(), dy.data(), qkv.data(), out.data(), lse.data(), s.B, s.T, s.H, s.KV, s.hs);

    const std::vector<T> qkv_in = from<T>(qkv), d_out = from<T>(dy), out_in = from<T>(out);
    std::vector<T> d_qkv = poisoned<T>(N * W);
    std::vector<float> delta = poisoned<float>(s.B * s.H * s.T);
    const cuda::Heads shape = cuda::heads_of(s.T, s.H, s.KV, s.hs);
    const int64_t rows = N * s.H;
    simt::launch(cuda::attention_backward_delta_kernel<T>, cuda::delta_blocks(rows), cuda::kThreads, 0, delta.data(),
                 d_out.data(), out_in.data(), rows, static_cast<int>(s.T), static_cast<int>(s.H),
                 static_cast<int>(s.hs));
    simt::launch(cuda::attention_backward_key_kernel<T>, cuda::tile_grid(s.B, s.T, s.KV), cuda::kThreads,
                 cuda::backward_key_shared_bytes(s.hs), d_qkv.data(), d_out.data(), qkv_in.data(), lse.data(),
                 delta.data(), shape, scale_of(s.hs));
    simt::launch(cuda::attention_backward_query_kernel<T>, cuda::tile_grid(s.B, s.T, s.H), cuda::kThreads,
                 cuda::backward_query_shared_bytes(s.hs), d_qkv.data(), d_out.data(), qkv_in.data(), lse.data(),
                 delta.data(), shape, scale_of(s.hs));
    EXPECT_TRUE(all_close(d_qkv, want, tolerance_for<T>({1e-4, 1e-5})));
  }
}

}  // namespace
}  // namespace tessera::simt_test

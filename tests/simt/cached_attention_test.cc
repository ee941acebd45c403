// Cached attention kernels (kernels/cuda/cached_attention_kernels.cuh) under the SIMT emulation against
// kernels/cpu/cached_attention, on cuda_backend_test's attention shapes: the last Tq = min(3, T) tokens over
// caches of T + 2 rows that hold the first T - Tq (random values elsewhere, which must stay), with
// cached_attention.cu's launches and dynamic shared memory (NaN-poisoned before every block).
//
// Tolerances, from the arithmetic: the caches are copies, exact. Scores are the same dot products in the same
// order on both sides (d = 0, 1, ...) and the same exp; the sum of the exponentials differs in order (block tree
// against a running sum, up to 72 positive terms: a few u) and the output divides once by the sum (the kernel)
// or each weight by it (the CPU): a few ulp of a convex combination of unit values, relative 1e-5 with an
// absolute 1e-6 (kFp32's rtol), as cuda_backend_test; bf16 outputs get one bf16 rounding on top.
#include "kernels/cpu/cached_attention.h"

#include "kernels/cuda/cached_attention_kernels.cuh"
#include "tests/simt/simt_test_util.h"

namespace tessera::simt_test {
namespace {

using cuda::bf16;

template <typename T>
class SimtCachedAttention : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(SimtCachedAttention, StorageTypes);

struct Shape {
  int64_t B, T, H, KV, hs;
};
const std::vector<Shape> kShapes = {{1, 1, 1, 1, 4},   {2, 13, 3, 3, 8},   {1, 64, 4, 4, 16},
                                    {2, 37, 3, 3, 24}, {1, 70, 2, 2, 128}, {2, 13, 3, 1, 8},
                                    {2, 37, 6, 2, 24}, {1, 70, 4, 1, 128}, {1, 64, 32, 8, 64}};

TYPED_TEST(SimtCachedAttention, MatchesCpu) {
  using T = TypeParam;
  std::mt19937 rng(71);
  for (const Shape& s : kShapes) {
    SCOPED_TRACE("B " + std::to_string(s.B) + " T " + std::to_string(s.T) + " H " + std::to_string(s.H) + " KV " +
                 std::to_string(s.KV) + " hs " + std::to_string(s.hs));
    const int64_t Tq = std::min<int64_t>(3, s.T), rows = s.T + 2, position = s.T - Tq;
    const int64_t C = s.H * s.hs, W = (s.H + 2 * s.KV) * s.hs, kv = s.KV * s.hs;
    const Floats qkv = rounded<T>(normal(rng, s.B * Tq * W));
    const Floats k0 = rounded<T>(normal(rng, s.B * rows * kv)), v0 = rounded<T>(normal(rng, s.B * rows * kv));
    Floats want(s.B * Tq * C), want_k = k0, want_v = v0;
    cpu::cached_attention_forward(want.data(), qkv.data(), want_k.data(), want_v.data(), s.B, Tq, rows, s.H, s.KV, s.hs,
                                  position);

    std::vector<T> out = poisoned<T>(s.B * Tq * C), qkv_in = from<T>(qkv), k_cache = from<T>(k0), v_cache = from<T>(v0);
    const int64_t copies = s.B * Tq * kv;
    simt::launch(cuda::cache_write_kernel<T>, cuda::grid_size(copies, 256), 256, 0, k_cache.data(), v_cache.data(),
                 qkv_in.data(), s.B, Tq, rows, s.H, s.KV, s.hs, position);
    const dim3 grid(static_cast<unsigned>(Tq), static_cast<unsigned>(s.H), static_cast<unsigned>(s.B));
    simt::launch(cuda::cached_attention_kernel<T>, grid, cuda::kThreads,
                 cuda::cached_attention_shared_bytes(position, Tq), out.data(), qkv_in.data(), k_cache.data(),
                 v_cache.data(), Tq, rows, s.H, s.KV, s.hs, position, 1.0f / std::sqrt(static_cast<float>(s.hs)));
    EXPECT_TRUE(all_close(k_cache, want_k, {0, 0})) << "k_cache";
    EXPECT_TRUE(all_close(v_cache, want_v, {0, 0})) << "v_cache";
    EXPECT_TRUE(all_close(out, want, tolerance_for<T>({1e-5, 1e-6}))) << "out";
  }
}

}  // namespace
}  // namespace tessera::simt_test

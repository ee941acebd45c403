// RoPE kernel (kernels/cuda/rope_kernels.cuh) under the SIMT emulation against kernels/cpu/rope: forward,
// backward and the position-offset forward, in place on packed qkv, on the shapes of cuda_backend_test.

#include "kernels/cpu/rope.h"

#include "kernels/cuda/rope_kernels.cuh"
#include "tests/simt/simt_test_util.h"

namespace tessera::simt_test {
namespace {

using cuda::bf16;

template <typename T>
class SimtRope : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(SimtRope, StorageTypes);

struct Shape {
  int64_t B, T, H, KV, hs;
};
const std::vector<Shape> kShapes = {{2, 13, 3, 3, 8}, {1, 64, 4, 4, 16}, {2, 37, 3, 3, 24},  {1, 70, 2, 2, 128},
                                    {2, 13, 3, 1, 8}, {2, 37, 6, 2, 24}, {1, 70, 4, 1, 128}, {1, 1, 1, 1, 4}};

// rope.cu's rotate: one launch, direction +1 forward and -1 backward.
template <typename T>
void emulated_rope(std::vector<T>& qkv, const Shape& s, int64_t seq_len, int64_t position, float theta,
                   float direction) {
  const int64_t N = s.B * s.T, pairs = N * (s.hs / 2);
  simt::launch(cuda::rope_kernel<T>, cuda::grid_size(pairs, cuda::kThreads), cuda::kThreads, 0, qkv.data(), N, s.H,
               s.KV, s.hs, seq_len, position, theta, direction);
}

TYPED_TEST(SimtRope, ForwardBackwardAndOffset) {
  using T = TypeParam;
  std::mt19937 rng(4);
  for (const Shape& s : kShapes) {
    const int64_t N = s.B * s.T, W = (s.H + 2 * s.KV) * s.hs;
    const int64_t seq_len = s.T % 2 == 0 ? s.T / 2 : s.T;
    SCOPED_TRACE("B " + std::to_string(s.B) + " T " + std::to_string(s.T) + " H " + std::to_string(s.H) + " KV " +
                 std::to_string(s.KV) + " hs " + std::to_string(s.hs));
    const Floats x = rounded<T>(normal(rng, N * W));
    {
      Floats want = x;
      cpu::rope_forward(want.data(), N, s.H, s.KV, s.hs, seq_len, 10000.0f);
      std::vector<T> qkv = from<T>(x);
      emulated_rope(qkv, s, seq_len, 0, 10000.0f, 1.0f);
      EXPECT_TRUE(all_close(qkv, rounded<T>(want), tolerance_for<T>({1e-6, 1e-6}))) << "forward";
    }
    {
      Floats want = x;
      cpu::rope_backward(want.data(), N, s.H, s.KV, s.hs, seq_len, 500000.0f);
      std::vector<T> qkv = from<T>(x);
      emulated_rope(qkv, s, seq_len, 0, 500000.0f, -1.0f);
      EXPECT_TRUE(all_close(qkv, rounded<T>(want), tolerance_for<T>({1e-6, 1e-6}))) << "backward";
    }
    {
      Floats want = x;
      cpu::rope_forward_at(want.data(), N, s.H, s.KV, s.hs, seq_len, 1000, 10000.0f);
      std::vector<T> qkv = from<T>(x);
      emulated_rope(qkv, s, seq_len, 1000, 10000.0f, 1.0f);
      EXPECT_TRUE(all_close(qkv, rounded<T>(want), tolerance_for<T>({1e-6, 1e-6}))) << "forward_at 1000";
    }
  }
}

}  // namespace
}  // namespace tessera::simt_test

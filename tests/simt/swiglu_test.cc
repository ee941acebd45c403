// SwiGLU kernels (kernels/cuda/swiglu_kernels.cuh) under the SIMT emulation against kernels/cpu/swiglu, on the
// shapes of cuda_backend_test.

#include "kernels/cpu/swiglu.h"

#include "kernels/cuda/swiglu_kernels.cuh"
#include "tests/simt/simt_test_util.h"

namespace tessera::simt_test {
namespace {

using cuda::bf16;

template <typename T>
class SimtSwiglu : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(SimtSwiglu, StorageTypes);

const std::vector<std::pair<int64_t, int64_t>> kShapes = {{1, 1}, {7, 45}, {37, 344}};

TYPED_TEST(SimtSwiglu, ForwardAndBackward) {
  using T = TypeParam;
  std::mt19937 rng(5);
  for (const auto& [N, F] : kShapes) {
    SCOPED_TRACE(std::to_string(N) + "x" + std::to_string(F));
    const Floats gu = rounded<T>(normal(rng, N * 2 * F, 3)), dy = rounded<T>(normal(rng, N * F));
    Floats want(N * F), want_d(N * 2 * F);
    cpu::swiglu_forward(want.data(), gu.data(), N, F);
    cpu::swiglu_backward(want_d.data(), dy.data(), gu.data(), N, F);
    std::vector<T> gate_up = from<T>(gu), d_out = from<T>(dy), out = poisoned<T>(N * F);
    std::vector<T> d_gate_up = poisoned<T>(N * 2 * F);
    const unsigned blocks = cuda::grid_size(N * F, cuda::kThreads);
    simt::launch(cuda::swiglu_forward_kernel<T>, blocks, cuda::kThreads, 0, out.data(), gate_up.data(), N, F);
    simt::launch(cuda::swiglu_backward_kernel<T>, blocks, cuda::kThreads, 0, d_gate_up.data(), d_out.data(),
                 gate_up.data(), N, F);
    EXPECT_TRUE(all_close(out, want, tolerance_for<T>({1e-5, 1e-6})));
    EXPECT_TRUE(all_close(d_gate_up, want_d, tolerance_for<T>({1e-5, 1e-6})));
  }
}

}  // namespace
}  // namespace tessera::simt_test

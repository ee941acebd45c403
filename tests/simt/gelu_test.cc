// GELU kernels (kernels/cuda/gelu_kernels.cuh) under the SIMT emulation against kernels/cpu/gelu, on the sizes
// of cuda_backend_test, the backward also in place (d_inp aliasing d_out).

#include "kernels/cpu/gelu.h"

#include "kernels/cuda/gelu_kernels.cuh"
#include "tests/simt/simt_test_util.h"

namespace tessera::simt_test {
namespace {

using cuda::bf16;

template <typename T>
class SimtGelu : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(SimtGelu, StorageTypes);

TYPED_TEST(SimtGelu, ForwardAndBackward) {
  using T = TypeParam;
  std::mt19937 rng(6);
  for (const int64_t n : {int64_t{1}, int64_t{1001}, int64_t{7 * 143}}) {
    SCOPED_TRACE(std::to_string(n));
    const Floats x = rounded<T>(normal(rng, n, 2)), dy = rounded<T>(normal(rng, n));
    Floats want(n), want_d(n);
    cpu::gelu_forward(want.data(), x.data(), n);
    cpu::gelu_backward(want_d.data(), x.data(), dy.data(), n);
    std::vector<T> inp = from<T>(x), d_out = from<T>(dy), out = poisoned<T>(n), d_inp = poisoned<T>(n);
    const unsigned blocks = cuda::grid_size(n, cuda::kThreads);
    simt::launch(cuda::gelu_forward_kernel<T>, blocks, cuda::kThreads, 0, out.data(), inp.data(), n);
    simt::launch(cuda::gelu_backward_kernel<T>, blocks, cuda::kThreads, 0, d_inp.data(), inp.data(), d_out.data(), n);
    EXPECT_TRUE(all_close(out, want, tolerance_for<T>(kFp32)));
    // The f32 gradient cancels for x < -4 (0.5 (1 + tanh) is a difference of nearly equal numbers), where the
    // CPU twin's tanh_approx and tanhf give results up to 3e-6 apart (at x = -4.80: CPU -6.15e-6, kernel
    // -9.23e-6, double -8.81e-6): an absolute 5e-6 on top of kFp32.
    const Tolerance backward = tolerance_for<T>({kFp32.rtol, 5e-6});
    EXPECT_TRUE(all_close(d_inp, want_d, backward));
    simt::launch(cuda::gelu_backward_kernel<T>, blocks, cuda::kThreads, 0, d_out.data(), inp.data(), d_out.data(), n);
    EXPECT_TRUE(all_close(d_out, want_d, backward)) << "in place";
  }
}

}  // namespace
}  // namespace tessera::simt_test

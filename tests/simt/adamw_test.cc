// AdamW and sum-of-squares kernels (kernels/cuda/adamw_kernels.cuh) under the SIMT emulation against
// kernels/cpu/adamw, with adamw.cu's host factors and launch sequences.
#include "kernels/cpu/adamw.h"

#include "kernels/cuda/adamw_kernels.cuh"
#include "tests/simt/simt_test_util.h"

namespace tessera::simt_test {
namespace {

using cuda::bf16;

// Both sides apply the same float constants (adamw_factors is the CPU twin's arithmetic) in the same order, so
// they differ only where a compiler contracts a product and a sum into one FMA (nvcc does on the device; a host
// compiler may on targets that have FMA): at most an ulp or two per operation, a few e-7 relative, and an absolute
// 1e-8 for m, whose two terms may nearly cancel.
constexpr Tolerance kAdamW{1e-6, 1e-8};

// As cuda_backend_test: decayed and not, a clipping factor, step 3, with and without the bf16 copy.
TEST(SimtAdamW, UpdateMatchesCpu) {
  std::mt19937 rng(31);
  for (const float weight_decay : {0.0f, 0.1f}) {
    for (const bool with_copy : {false, true}) {
      SCOPED_TRACE(std::string(weight_decay == 0 ? "no decay" : "decayed") + (with_copy ? ", bf16 copy" : ""));
      const int64_t n = 1003, step = 3;
      const float lr = 3e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, grad_scale = 0.7f;
      const Floats param = normal(rng, n), grad = normal(rng, n), m = normal(rng, n, 0.1), v = uniform(rng, n, 0, 0.5);
      Floats want_param = param, want_m = m, want_v = v;
      std::vector<uint16_t> want_copy(n, 0xffff);
      cpu::adamw_update(want_param.data(), grad.data(), want_m.data(), want_v.data(), n, lr, beta1, beta2, eps,
                        weight_decay, step, grad_scale, with_copy ? want_copy.data() : nullptr);

      Floats got_param = param, got_m = m, got_v = v;
      std::vector<bf16> copy = poisoned<bf16>(n);
      const cuda::AdamWFactors f = cuda::adamw_factors(lr, beta1, beta2, weight_decay, step);
      simt::launch(cuda::adamw_kernel, cuda::grid_size(n, cuda::kThreads), cuda::kThreads, 0, got_param.data(),
                   grad.data(), got_m.data(), got_v.data(), n, f.decay, beta1, beta2, eps, f.step_size,
                   f.bias_correction2_sqrt, grad_scale, with_copy ? copy.data() : nullptr);
      EXPECT_TRUE(all_close(got_param, want_param, kAdamW)) << "param";
      EXPECT_TRUE(all_close(got_m, want_m, kAdamW)) << "m";
      EXPECT_TRUE(all_close(got_v, want_v, kAdamW)) << "v";
      if (with_copy) {
        Floats copied(n);
        for (int64_t i = 0; i < n; ++i) copied[i] = bf16_to_f32(want_copy[i]);
        EXPECT_TRUE(all_close(copy, copied, tolerance_for<bf16>(kAdamW))) << "bf16 copy";
      }
    }
  }
}

// adamw.cu's sum_of_squares_many: rows of kMaxPartials doubles zeroed, one partial launch per tensor, one
// sum_partials launch with a block per tensor.
std::vector<double> emulated_sums(const std::vector<Floats>& f32, const std::vector<std::vector<bf16>>& bf16s) {
  const int count = static_cast<int>(f32.size() + bf16s.size());
  std::vector<double> partials(static_cast<size_t>(count) * cuda::kMaxPartials, 0.0);
  std::vector<double> results(count, std::numeric_limits<double>::quiet_NaN());
  int i = 0;
  const auto reduce = [&](const auto* x, int64_t n) {
    double* row = partials.data() + static_cast<size_t>(i++) * cuda::kMaxPartials;
    if (n == 0) return;
    using T = std::remove_cvref_t<decltype(*x)>;
    simt::launch(cuda::sum_of_squares_partial_kernel<T>, cuda::grid_size(n, cuda::kThreads, cuda::kMaxPartials),
                 cuda::kThreads, 0, row, x, n);
  };
  for (const Floats& x : f32) reduce(x.data(), std::ssize(x));
  for (const std::vector<bf16>& x : bf16s) reduce(x.data(), std::ssize(x));
  simt::launch(cuda::sum_partials_kernel, static_cast<unsigned>(count), cuda::kThreads, 0, results.data(),
               partials.data());
  return results;
}

// Squares of floats are exact in double; a sum of n positive doubles is within n u (u = 2^-53, 1.1e-11 for
// n = 1e5) of the exact one whatever the order, and its rounding errors add as a random walk (about sqrt(n) u,
// 4e-14), so 1e-12 relative, as cuda_backend_test. Sizes: cuda_backend_test's 1, 255, 100003, 4099 and 70000
// in f32, and 300000 in bf16, past the 1024-block cap, so that threads stride.
TEST(SimtSumOfSquares, ManyMatchCpuAndOneByOne) {
  std::mt19937 rng(32);
  const std::vector<int64_t> sizes = {1, 255, 100003, 4099, 70000};
  std::vector<Floats> f32;
  for (int64_t n : sizes) f32.push_back(normal(rng, n));
  const Floats wide = rounded<bf16>(normal(rng, 300000));
  const std::vector<std::vector<bf16>> bf16s = {from<bf16>(wide)};
  const std::vector<double> sums = emulated_sums(f32, bf16s);
  for (size_t i = 0; i < sizes.size(); ++i) {
    const double want = cpu::sum_of_squares(f32[i].data(), sizes[i]);
    EXPECT_NEAR(sums[i], want, 1e-12 * want) << "n = " << sizes[i];
    EXPECT_EQ(sums[i], emulated_sums({f32[i]}, {})[0]) << "n = " << sizes[i] << " alone";
  }
  const double want_wide = cpu::sum_of_squares(wide.data(), std::ssize(wide));
  EXPECT_NEAR(sums.back(), want_wide, 1e-12 * want_wide) << "bf16, n = " << wide.size();
}

}  // namespace
}  // namespace tessera::simt_test

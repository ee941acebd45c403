// Cross-entropy kernels (kernels/cuda/cross_entropy_kernels.cuh) under the SIMT emulation against
// kernels/cpu/cross_entropy: the three passes (row max, row statistics, loss and gradient in place), also with
// per-token weights (a loss mask), on cuda_backend_test's vocabulary shards: padding columns, targets below,
// inside, in the padding of and above the shard, and an empty shard (row max only).
//
// Tolerances, from the arithmetic: the row max and the target logit are copies of inputs, exact. The sum of
// exponentials: the kernel's expf (here the host's, within an ulp) against the CPU's exp_approx (2 ulp), the
// kernel adding in double, the CPU in float blocks of 256 positive terms, whose rounding errors add as a random
// walk of about 16 u = 1e-6: relative 1e-5 (kFp32). The loss log(sum) + max - target is of size 10, its terms
// carry those errors: kFp32. The gradient p * scale is 3 ulp apart at most; at the target column it is
// p * scale - d_scale * weight, where the cancellation leaves an absolute error of an ulp of d_scale (1e-9):
// kFp32 with a 1e-6 floor, as cuda_backend_test; bf16 values get one bf16 rounding on top.
#include "kernels/cpu/cross_entropy.h"

#include "kernels/cuda/cross_entropy_kernels.cuh"
#include "tests/simt/simt_test_util.h"

namespace tessera::simt_test {
namespace {

using cuda::bf16;

template <typename T>
class SimtCrossEntropy : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(SimtCrossEntropy, StorageTypes);

struct VocabShape {
  int64_t N, V, valid, vocab_start;
};
const std::vector<VocabShape> kShapes = {{11, 50, 47, 100}, {4, 5003, 5000, 0}, {3, 8, 0, 16}, {37, 1000, 997, 0}};

constexpr Tolerance kExact{0, 0};

TYPED_TEST(SimtCrossEntropy, PassesMatchCpu) {
  using T = TypeParam;
  std::mt19937 rng(41);
  for (const VocabShape& s : kShapes) {
    SCOPED_TRACE(std::to_string(s.N) + "x" + std::to_string(s.V) + " valid " + std::to_string(s.valid));
    const int64_t N = s.N, V = s.V, cols = cuda::valid(s.V, s.valid);
    const unsigned blocks = static_cast<unsigned>(N);
    const Floats logits = rounded<T>(normal(rng, N * V, 3));
    std::uniform_int_distribution<int32_t> target_of(static_cast<int32_t>(s.vocab_start - 10),
                                                     static_cast<int32_t>(s.vocab_start + V + 9));
    std::vector<int32_t> targets(N);
    for (int32_t& t : targets) t = target_of(rng);
    const std::vector<T> logits_in = from<T>(logits);

    Floats row_max(N);
    cpu::cross_entropy_row_max(row_max.data(), logits.data(), N, V, s.valid);
    std::vector<float> got_max = poisoned<float>(N);
    simt::launch(cuda::row_max_kernel<T>, blocks, cuda::kThreads, 0, got_max.data(), logits_in.data(), V, cols);
    EXPECT_TRUE(all_close(got_max, row_max, kExact)) << "row max";
    if (s.valid == 0) continue;  // no softmax over an empty shard

    Floats sum_exp(N), target_logit(N);
    cpu::cross_entropy_row_stats(sum_exp.data(), target_logit.data(), logits.data(), row_max.data(), targets.data(), N,
                                 V, s.vocab_start, s.valid);
    std::vector<float> got_sum = poisoned<float>(N), got_target = poisoned<float>(N);
    simt::launch(cuda::row_stats_kernel<T>, blocks, cuda::kThreads, 0, got_sum.data(), got_target.data(),
                 logits_in.data(), row_max.data(), targets.data(), V, s.vocab_start, cols);
    EXPECT_TRUE(all_close(got_sum, sum_exp, kFp32)) << "sum of exponentials";
    EXPECT_TRUE(all_close(got_target, target_logit, kExact)) << "target logit";

    // The gradient's scale 1/44 as cuda_backend_test; weights 0 (masked), 0.5 and 1.
    Floats weights(N);
    for (int64_t n = 0; n < N; ++n) weights[n] = n % 3 == 0 ? 0.0f : n % 4 == 1 ? 0.5f : 1.0f;
    for (const bool weighted : {false, true}) {
      SCOPED_TRACE(weighted ? "weighted" : "unweighted");
      Floats want_losses(N), want_grad = logits;
      cpu::cross_entropy_loss_backward(want_losses.data(), want_grad.data(), row_max.data(), sum_exp.data(),
                                       target_logit.data(), targets.data(), weighted ? weights.data() : nullptr, N, V,
                                       s.vocab_start, s.valid, 1.0f / 44.0f);
      std::vector<float> losses = poisoned<float>(N);
      std::vector<T> grad = logits_in;
      simt::launch(cuda::loss_backward_kernel<T>, blocks, cuda::kThreads, 0, losses.data(), grad.data(), row_max.data(),
                   sum_exp.data(), target_logit.data(), targets.data(), weighted ? weights.data() : nullptr, V,
                   s.vocab_start, cols, 1.0f / 44.0f);
      EXPECT_TRUE(all_close(losses, want_losses, kFp32)) << "losses";
      EXPECT_TRUE(all_close(grad, want_grad, tolerance_for<T>({kFp32.rtol, 1e-6}, 1e-6))) << "gradient";
      if (weighted) {
        // Masked rows are exactly zero.
        for (int64_t n = 0; n < N; n += 3) {
          for (int64_t j = 0; j < V; ++j) ASSERT_EQ(to_floats(std::vector<T>{grad[n * V + j]})[0], 0.0f);
        }
      }
    }
  }
}

}  // namespace
}  // namespace tessera::simt_test

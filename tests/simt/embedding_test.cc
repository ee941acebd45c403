// Embedding kernels (kernels/cuda/embedding_kernels.cuh) under the SIMT emulation against kernels/cpu/embedding,
// on cuda_backend_test's cases: a vocabulary shard with tokens inside and outside it and one token three times,
// with and without position embeddings, and a longer skewed batch (runs of one token, most of the vocabulary
// absent).
//
// The backward runs embedding.cu's launch sequence with one host stand-in: cub::DeviceRadixSort::SortPairs
// (device code from a library, which the emulation cannot run) is replaced by std::stable_sort of the
// (key, position) pairs by key, which is what the radix sort computes (it is stable, and keys are below
// 2^end_bit, so sorting on the low end_bit bits is sorting on the whole key). The kernels around it, the keys and
// the per-token sums over the sorted runs, are the device code.
//
// Tolerances: none. The forward adds two values in f32 and rounds once, as the CPU does (its f32 sum rounded
// once to bf16 here). The backward adds each token's rows of d_out in increasing position order, the CPU twin's
// order, in f32: bit for bit, in both storage types (bf16 rows widen exactly).
#include "kernels/cpu/embedding.h"

#include <algorithm>
#include <numeric>

#include "kernels/cuda/embedding_kernels.cuh"
#include "tests/simt/simt_test_util.h"

namespace tessera::simt_test {
namespace {

using cuda::bf16;

template <typename T>
class SimtEmbedding : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(SimtEmbedding, StorageTypes);

constexpr Tolerance kExact{0, 0};

struct Batch {
  int64_t B, T, C, V_local, vocab_start;
  std::vector<int32_t> tokens;
};

std::vector<int32_t> random_tokens(std::mt19937& rng, int64_t n, int32_t high) {
  std::uniform_int_distribution<int32_t> token(0, high - 1);
  std::vector<int32_t> tokens(n);
  for (int32_t& t : tokens) t = token(rng);
  return tokens;
}

std::vector<Batch> batches(std::mt19937& rng) {
  Batch small{3, 7, 19, 11, 5, random_tokens(rng, 21, 20)};
  small.tokens[4] = small.tokens[9] = small.tokens[17] = 7;
  Batch skewed{4, 129, 72, 1000, 0, random_tokens(rng, 4 * 129, 1200)};
  for (size_t i = 0; i < skewed.tokens.size(); i += 3) skewed.tokens[i] = 17;
  return {small, skewed};
}

std::string name(const Batch& b) { return std::to_string(b.B) + "x" + std::to_string(b.T) + "x" + std::to_string(b.C); }

TYPED_TEST(SimtEmbedding, Forward) {
  using T = TypeParam;
  std::mt19937 rng(51);
  for (const Batch& b : batches(rng)) {
    for (const bool positions : {true, false}) {
      SCOPED_TRACE(name(b) + (positions ? "" : " without positions"));
      const int64_t N = b.B * b.T, C = b.C;
      const Floats wte = rounded<T>(normal(rng, b.V_local * C, 2)), wpe = rounded<T>(normal(rng, b.T * C));
      Floats want(N * C);
      cpu::embedding_forward(want.data(), b.tokens.data(), wte.data(), positions ? wpe.data() : nullptr, N, C,
                             b.V_local, b.T, b.vocab_start);
      std::vector<T> out = poisoned<T>(N * C), wte_in = from<T>(wte), wpe_in = from<T>(wpe);
      simt::launch(cuda::embedding_forward_kernel<T>, cuda::grid_size(N * C, cuda::kThreads), cuda::kThreads, 0,
                   out.data(), b.tokens.data(), wte_in.data(), positions ? wpe_in.data() : nullptr, N, C, b.V_local,
                   b.T, b.vocab_start);
      EXPECT_TRUE(all_close(out, rounded<T>(want), kExact));
    }
  }
}

// embedding.cu's embedding_backward with the sort on the host (see the file comment).
template <typename T>
void emulated_backward(float* d_wte, float* d_wpe, const T* d_out, const int32_t* tokens, int64_t N, int64_t C,
                       int64_t V_local, int64_t seq_len, int64_t vocab_start) {
  std::vector<uint32_t> keys(N, 0xffffffffu), positions(N, 0xffffffffu);
  simt::launch(cuda::embedding_sort_keys_kernel, cuda::grid_size(N, cuda::kThreads), cuda::kThreads, 0, keys.data(),
               positions.data(), tokens, N, V_local, vocab_start);
  std::vector<uint32_t> order(N);
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return keys[a] < keys[b]; });
  std::vector<uint32_t> sorted_keys(N), sorted_positions(N);
  for (int64_t i = 0; i < N; ++i) {
    sorted_keys[i] = keys[order[i]];
    sorted_positions[i] = positions[order[i]];
  }
  simt::launch(cuda::embedding_backward_wte_kernel<T>, static_cast<unsigned>(N), cuda::kRowThreads, 0, d_wte, d_out,
               sorted_keys.data(), sorted_positions.data(), N, C, V_local);
  if (d_wpe != nullptr) {
    simt::launch(cuda::embedding_backward_wpe_kernel<T>, cuda::grid_size(seq_len * C, cuda::kThreads), cuda::kThreads,
                 0, d_wpe, d_out, N, C, seq_len);
  }
}

TYPED_TEST(SimtEmbedding, Backward) {
  using T = TypeParam;
  std::mt19937 rng(52);
  for (const Batch& b : batches(rng)) {
    for (const bool positions : {true, false}) {
      SCOPED_TRACE(name(b) + (positions ? "" : " without positions"));
      const int64_t N = b.B * b.T, C = b.C;
      const Floats dy = rounded<T>(normal(rng, N * C)), dwte0 = normal(rng, b.V_local * C),
                   dwpe0 = normal(rng, b.T * C);
      Floats want_wte = dwte0, want_wpe = dwpe0;
      cpu::embedding_backward(want_wte.data(), positions ? want_wpe.data() : nullptr, dy.data(), b.tokens.data(), N, C,
                              b.V_local, b.T, b.vocab_start);
      std::vector<float> d_wte = dwte0, d_wpe = dwpe0;
      const std::vector<T> d_out = from<T>(dy);
      emulated_backward(d_wte.data(), positions ? d_wpe.data() : nullptr, d_out.data(), b.tokens.data(), N, C,
                        b.V_local, b.T, b.vocab_start);
      EXPECT_TRUE(all_close(d_wte, want_wte, kExact)) << "d_wte";
      EXPECT_TRUE(all_close(d_wpe, want_wpe, kExact)) << "d_wpe";
    }
  }
}

}  // namespace
}  // namespace tessera::simt_test

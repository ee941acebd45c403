// Embedding forward/backward.
//
// The backward scatter d_wte[token[i]] += d_out[i], without atomics and in a fixed order:
//   1. key[i] = the token's row in this shard, or V_local for a token outside it; position[i] = i.
//   2. cub's radix sort orders the (key, position) pairs by key; it is stable, so within one key the
//      positions stay increasing.
//   3. One block per sorted slot s. The block whose slot starts a run of equal keys (s == 0 or key[s-1] !=
//      key[s]) owns that row; it finds the run's end and, one column per thread, adds d_out[position[k]] for
//      k over the run in order. Blocks of other slots, and of the run of skipped tokens, return at once.
// Every row of d_wte is read and written by exactly one block, so there is no race; the work is the run
// lengths, O(N) in all, plus the sort.
#include <bit>
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/embedding_kernels.cuh"

namespace tessera::cuda {

namespace {

size_t round_up(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* wte, const T* wpe, int64_t N, int64_t C, int64_t V_local,
                       int64_t seq_len, int64_t vocab_start, const Context& ctx) {
  if (N == 0 || C == 0) return;
  embedding_forward_kernel<<<grid_size(N * C, kThreads), kThreads, 0, ctx.stream>>>(out, tokens, wte, wpe, N, C,
                                                                                    V_local, seq_len, vocab_start);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void embedding_backward(float* d_wte, float* d_wpe, const T* d_out, const int32_t* tokens, int64_t N, int64_t C,
                        int64_t V_local, int64_t seq_len, int64_t vocab_start, const Context& ctx) {
  if (N == 0 || C == 0) return;
  TS_CHECK(N < (int64_t{1} << 31) && V_local < (int64_t{1} << 31), ConfigError, "embedding_backward: ", N,
           " tokens and ", V_local, " vocabulary rows; at most 2^31 - 1 of each per call");
  if (V_local > 0) {
    const int count = static_cast<int>(N);
    // Keys are 0..V_local: enough bits for V_local itself.
    const int end_bit = std::bit_width(static_cast<uint64_t>(V_local));
    size_t sort_bytes = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const uint32_t*>(nullptr),
                                               static_cast<uint32_t*>(nullptr), static_cast<const uint32_t*>(nullptr),
                                               static_cast<uint32_t*>(nullptr), count, 0, end_bit, ctx.stream));
    const size_t array_bytes = round_up(static_cast<size_t>(N) * sizeof(uint32_t));
    Scratch scratch(ctx, 4 * array_bytes + round_up(sort_bytes));
    char* base = static_cast<char*>(scratch.data());
    uint32_t* keys = reinterpret_cast<uint32_t*>(base);
    uint32_t* positions = reinterpret_cast<uint32_t*>(base + array_bytes);
    uint32_t* sorted_keys = reinterpret_cast<uint32_t*>(base + 2 * array_bytes);
    uint32_t* sorted_positions = reinterpret_cast<uint32_t*>(base + 3 * array_bytes);
    void* sort_scratch = base + 4 * array_bytes;
    embedding_sort_keys_kernel<<<grid_size(N, kThreads), kThreads, 0, ctx.stream>>>(keys, positions, tokens, N, V_local,
                                                                                    vocab_start);
    CUDA_CHECK_LAUNCH();
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(sort_scratch, sort_bytes, keys, sorted_keys, positions, sorted_positions,
                                               count, 0, end_bit, ctx.stream));
    embedding_backward_wte_kernel<<<static_cast<unsigned>(N), kRowThreads, 0, ctx.stream>>>(
        d_wte, d_out, sorted_keys, sorted_positions, N, C, V_local);
    CUDA_CHECK_LAUNCH();
  }
  if (d_wpe != nullptr) {
    embedding_backward_wpe_kernel<<<grid_size(seq_len * C, kThreads), kThreads, 0, ctx.stream>>>(d_wpe, d_out, N, C,
                                                                                                 seq_len);
    CUDA_CHECK_LAUNCH();
  }
}

template void embedding_forward<float>(float*, const int32_t*, const float*, const float*, int64_t, int64_t, int64_t,
                                       int64_t, int64_t, const Context&);
template void embedding_forward<bf16>(bf16*, const int32_t*, const bf16*, const bf16*, int64_t, int64_t, int64_t,
                                      int64_t, int64_t, const Context&);
template void embedding_backward<float>(float*, float*, const float*, const int32_t*, int64_t, int64_t, int64_t,
                                        int64_t, int64_t, const Context&);
template void embedding_backward<bf16>(float*, float*, const bf16*, const int32_t*, int64_t, int64_t, int64_t, int64_t,
                                       int64_t, const Context&);

}  // namespace tessera::cuda

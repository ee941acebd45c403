// Embedding forward/backward.
//
// The backward scatter d_wte[token[i]] += d_out[i] is done without sorting and without atomics: block i looks
// at token i; if an earlier position holds the same token, another block owns that row and block i stops.
// Otherwise block i owns the row and sums d_out over every position with that token, in increasing order. The
// ownership test reads all N tokens per block (N^2 integer compares in total, cheap next to the row traffic at
// GPT batch sizes; a sort-based scheme is the upgrade for very long batches).
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/reduce.cuh"

namespace tessera::cuda {

namespace {

constexpr int kThreads = 256;

__global__ void embedding_forward_kernel(float* out, const int32_t* tokens, const float* wte, const float* wpe,
                                         int64_t N, int64_t C, int64_t V_local, int64_t seq_len, int64_t vocab_start) {
  const int64_t n = N * C;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / C, j = e % C;
    const int64_t row = static_cast<int64_t>(tokens[i]) - vocab_start;
    float value = (row >= 0 && row < V_local) ? wte[row * C + j] : 0.0f;
    if (wpe != nullptr) value += wpe[(i % seq_len) * C + j];
    out[e] = value;
  }
}

// One block per position i; see the file comment.
__global__ void embedding_backward_wte_kernel(float* d_wte, const float* d_out, const int32_t* tokens, int64_t N,
                                              int64_t C, int64_t V_local, int64_t vocab_start) {
  const int64_t i = blockIdx.x;
  const int32_t token = tokens[i];
  const int64_t row = static_cast<int64_t>(token) - vocab_start;
  if (row < 0 || row >= V_local) return;  // the same for the whole block
  int seen_earlier = 0;
  for (int64_t k = threadIdx.x; k < i; k += blockDim.x) seen_earlier |= tokens[k] == token;
  if (__syncthreads_or(seen_earlier)) return;
  float* dw = d_wte + row * C;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    float acc = dw[j];
    for (int64_t k = i; k < N; ++k) {
      if (tokens[k] == token) acc += d_out[k * C + j];
    }
    dw[j] = acc;
  }
}

// One thread per (position p, column j): the rows i = p, p + seq_len, ... in increasing order.
__global__ void embedding_backward_wpe_kernel(float* d_wpe, const float* d_out, int64_t N, int64_t C, int64_t seq_len) {
  const int64_t n = seq_len * C;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float acc = d_wpe[e];
    for (int64_t i = e / C; i < N; i += seq_len) acc += d_out[i * C + e % C];
    d_wpe[e] = acc;
  }
}

}  // namespace

void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int64_t N, int64_t C,
                       int64_t V_local, int64_t seq_len, int64_t vocab_start, const Context& ctx) {
  if (N == 0 || C == 0) return;
  embedding_forward_kernel<<<grid_size(N * C, kThreads), kThreads, 0, ctx.stream>>>(out, tokens, wte, wpe, N, C,
                                                                                    V_local, seq_len, vocab_start);
  CUDA_CHECK_LAUNCH();
}

void embedding_backward(float* d_wte, float* d_wpe, const float* d_out, const int32_t* tokens, int64_t N, int64_t C,
                        int64_t V_local, int64_t seq_len, int64_t vocab_start, const Context& ctx) {
  if (N == 0 || C == 0) return;
  embedding_backward_wte_kernel<<<static_cast<unsigned>(N), 128, 0, ctx.stream>>>(d_wte, d_out, tokens, N, C, V_local,
                                                                                  vocab_start);
  CUDA_CHECK_LAUNCH();
  if (d_wpe != nullptr) {
    embedding_backward_wpe_kernel<<<grid_size(seq_len * C, kThreads), kThreads, 0, ctx.stream>>>(d_wpe, d_out, N, C,
                                                                                                 seq_len);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace tessera::cuda

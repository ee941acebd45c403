// Embedding kernels (forward, the backward's sort keys, its per-token row sums and the position rows); see
// embedding.cu, which also runs the radix sort between them (cub, device code that the SIMT emulation cannot run:
// its test sorts on the host instead).
// Private to kernels/cuda: included by embedding.cu, which launches them, and by the SIMT emulation test
// (tests/simt), which runs them on the host. Names stay in an unnamed namespace, one copy per including file.
#pragma once

#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/storage.cuh"

namespace tessera::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kRowThreads = 128;

template <typename T>
__global__ void embedding_forward_kernel(T* out, const int32_t* tokens, const T* wte, const T* wpe, int64_t N,
                                         int64_t C, int64_t V_local, int64_t seq_len, int64_t vocab_start) {
  const int64_t n = N * C;
  for (int64_t e = grid_start(); e < n; e += grid_stride()) {
    const int64_t i = e / C, j = e % C;
    const int64_t row = static_cast<int64_t>(tokens[i]) - vocab_start;
    float value = (row >= 0 && row < V_local) ? to_float(wte[row * C + j]) : 0.0f;
    if (wpe != nullptr) value += to_float(wpe[(i % seq_len) * C + j]);
    out[e] = from_float<T>(value);
  }
}

// Step 1 of the file comment.
__global__ void embedding_sort_keys_kernel(uint32_t* keys, uint32_t* positions, const int32_t* tokens, int64_t N,
                                           int64_t V_local, int64_t vocab_start) {
  for (int64_t i = grid_start(); i < N; i += grid_stride()) {
    const int64_t row = static_cast<int64_t>(tokens[i]) - vocab_start;
    keys[i] = static_cast<uint32_t>((row >= 0 && row < V_local) ? row : V_local);
    positions[i] = static_cast<uint32_t>(i);
  }
}

// Step 3 of the file comment: block s, sorted keys and positions.
template <typename T>
__global__ void embedding_backward_wte_kernel(float* d_wte, const T* d_out, const uint32_t* keys,
                                              const uint32_t* positions, int64_t N, int64_t C, int64_t V_local) {
  const int64_t s = blockIdx.x;
  const uint32_t key = keys[s];
  // Uniform over the block: every thread reads the same keys.
  if (key == static_cast<uint32_t>(V_local)) return;
  if (s > 0 && keys[s - 1] == key) return;
  int64_t end = s + 1;
  while (end < N && keys[end] == key) ++end;
  float* dw = d_wte + static_cast<int64_t>(key) * C;
  for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
    float acc = dw[j];
    for (int64_t k = s; k < end; ++k) acc += to_float(d_out[static_cast<int64_t>(positions[k]) * C + j]);
    dw[j] = acc;
  }
}

// One thread per (position p, column j): the rows i = p, p + seq_len, ... in increasing order.
template <typename T>
__global__ void embedding_backward_wpe_kernel(float* d_wpe, const T* d_out, int64_t N, int64_t C, int64_t seq_len) {
  const int64_t n = seq_len * C;
  for (int64_t e = grid_start(); e < n; e += grid_stride()) {
    float acc = d_wpe[e];
    for (int64_t i = e / C; i < N; i += seq_len) acc += to_float(d_out[i * C + e % C]);
    d_wpe[e] = acc;
  }
}

}  // namespace

}  // namespace tessera::cuda

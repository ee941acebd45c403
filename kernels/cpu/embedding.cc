// Embedding forward/backward. The backward scatters rows of d_out into d_wte; threads split the columns so
// repeated tokens never race and the sum order is fixed.
#include "kernels/cpu/embedding.h"

namespace tessera::cpu {

void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int64_t N,
                       int64_t C, int64_t V_local, int64_t seq_len, int64_t vocab_start) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < N; ++i) {
    float* y = out + i * C;
    int64_t row = static_cast<int64_t>(tokens[i]) - vocab_start;
    bool local = row >= 0 && row < V_local;
    const float* e = local ? wte + row * C : nullptr;
    const float* p = wpe != nullptr ? wpe + (i % seq_len) * C : nullptr;
    for (int64_t j = 0; j < C; ++j) y[j] = (e ? e[j] : 0.0f) + (p ? p[j] : 0.0f);
  }
}

void embedding_backward(float* d_wte, float* d_wpe, const float* d_out, const int32_t* tokens, int64_t N,
                        int64_t C, int64_t V_local, int64_t seq_len, int64_t vocab_start) {
  constexpr int64_t kBlock = 32;
#pragma omp parallel for schedule(static)
  for (int64_t j0 = 0; j0 < C; j0 += kBlock) {
    int64_t j1 = j0 + kBlock < C ? j0 + kBlock : C;
    for (int64_t i = 0; i < N; ++i) {
      const float* dy = d_out + i * C;
      int64_t row = static_cast<int64_t>(tokens[i]) - vocab_start;
      if (row >= 0 && row < V_local) {
        float* dw = d_wte + row * C;
        for (int64_t j = j0; j < j1; ++j) dw[j] += dy[j];
      }
      if (d_wpe != nullptr) {
        float* dp = d_wpe + (i % seq_len) * C;
        for (int64_t j = j0; j < j1; ++j) dp[j] += dy[j];
      }
    }
  }
}

}  // namespace tessera::cpu

// Linear layer forward/backward through sgemm.
#include "kernels/cpu/matmul.h"

#include <cblas.h>

#include <cstring>

namespace tessera::cpu {

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N, int64_t C,
                    int64_t OC) {
  float beta = 0.0f;
  if (bias != nullptr) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; ++i) std::memcpy(out + i * OC, bias, sizeof(float) * OC);
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, weight, C, beta, out, OC);
}

void matmul_backward(float* d_inp, float* d_weight, float* d_bias, const float* d_out, const float* inp,
                     const float* weight, int64_t N, int64_t C, int64_t OC) {
  if (d_inp != nullptr) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, d_out, OC, weight, C, 0.0f, d_inp, C);
  }
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, d_out, OC, inp, C, 1.0f, d_weight, C);
  if (d_bias != nullptr) {
    // Column sums; each thread owns a range of columns so no reduction is needed.
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < OC; o += 64) {
      int64_t end = o + 64 < OC ? o + 64 : OC;
      float sums[64] = {0};
      for (int64_t i = 0; i < N; ++i) {
        const float* row = d_out + i * OC;
        for (int64_t j = o; j < end; ++j) sums[j - o] += row[j];
      }
      for (int64_t j = o; j < end; ++j) d_bias[j] += sums[j - o];
    }
  }
}

}  // namespace tessera::cpu

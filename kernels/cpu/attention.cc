// Attention forward/backward.
//
// For one (b, h), with Q the [T, hs] slice of query head h, K and V those of its key/value head g = h / (H/KV)
// (row stride (H + 2*KV)*hs, the width of qkv) and s = 1/sqrt(hs):
//   S = s Q K^T (causal: only j <= i),  lse_i = log sum_j exp(S_ij),  P = exp(S - lse),  O = P V
// backward, with dO given, P recomputed from S and lse:
//   dP = dO V^T,  dV = P^T dO,  D_i = rowsum(dO_i * O_i) (= rowsum(dP_i * P_i)),  dS = P * (dP - D),
//   dQ = s dS K,  dK = s dS^T Q
// The forward runs the (b, h) pairs in parallel, the backward the (b, g) pairs, each looping over the query heads
// of its group (dK and dV of the first head overwrite, those of the others are added by sgemm with beta = 1);
// with KV == H that is one head per group and the same sgemm calls as multi-head attention. sgemm called inside
// the parallel region runs on one thread (OpenBLAS, OpenMP build). Matmuls compute the full square and the
// causal structure is applied afterwards: at the sequence lengths used on CPU this costs less than calling sgemm
// per row block. The [T,T] matrices live in per-thread scratch that grows to the largest T seen and is then
// reused.
#include "kernels/cpu/attention.h"

#include <cblas.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/fast_math.h"

namespace tessera::cpu {

namespace {

// This thread's scratch of at least n floats.
float* thread_scratch(std::vector<float>& scratch, int64_t n) {
  if (static_cast<int64_t>(scratch.size()) < n) scratch.resize(static_cast<size_t>(n));
  return scratch.data();
}

}  // namespace

void attention_forward(float* out, float* lse, const float* qkv, int64_t B, int64_t T, int64_t H, int64_t KV,
                       int64_t hs) {
  const int64_t C = H * hs;
  const int64_t C3 = (H + 2 * KV) * hs;  // the row width of qkv
  const int64_t group = H / KV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
#pragma omp parallel
  {
    thread_local std::vector<float> scratch;
    float* p = thread_scratch(scratch, T * T);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        const float* q = qkv + b * T * C3 + h * hs;
        const float* k = qkv + b * T * C3 + C + (h / group) * hs;
        const float* v = k + KV * hs;
        float* row_lse = lse + (b * H + h) * T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, C3, k, C3, 0.0f, p, T);
        for (int64_t i = 0; i < T; ++i) {
          float* row = p + i * T;
          float max = row[0];
          for (int64_t j = 1; j <= i; ++j) max = row[j] > max ? row[j] : max;
          float sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t j = 0; j <= i; ++j) {
            row[j] = exp_approx(row[j] - max);
            sum += row[j];
          }
          const float inv = 1.0f / sum;
          for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
          for (int64_t j = i + 1; j < T; ++j) row[j] = 0.0f;
          row_lse[i] = max + std::log(sum);
        }
        float* o = out + b * T * C + h * hs;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, p, T, v, C3, 0.0f, o, C);
      }
    }
  }
}

void attention_backward(float* d_qkv, const float* d_out, const float* qkv, const float* out, const float* lse,
                        int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs) {
  const int64_t C = H * hs;
  const int64_t C3 = (H + 2 * KV) * hs;  // the row width of qkv
  const int64_t group = H / KV;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
#pragma omp parallel
  {
    thread_local std::vector<float> scratch;
    float* p = thread_scratch(scratch, 2 * T * T);
    float* dp = p + T * T;
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t g = 0; g < KV; ++g) {
        const float* k = qkv + b * T * C3 + C + g * hs;
        const float* v = k + KV * hs;
        float* dk = d_qkv + b * T * C3 + C + g * hs;
        float* dv = dk + KV * hs;
        for (int64_t h = g * group; h < (g + 1) * group; ++h) {
          // dK and dV of the group's first head overwrite, the others add to them.
          const float beta = h == g * group ? 0.0f : 1.0f;
          const float* q = qkv + b * T * C3 + h * hs;
          float* dq = d_qkv + b * T * C3 + h * hs;
          const float* o = out + b * T * C + h * hs;
          const float* dout = d_out + b * T * C + h * hs;
          const float* row_lse = lse + (b * H + h) * T;
          // P = exp(s Q K^T - lse), zero above the diagonal.
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, C3, k, C3, 0.0f, p, T);
          for (int64_t i = 0; i < T; ++i) {
            float* row = p + i * T;
            const float shift = row_lse[i];
#pragma omp simd
            for (int64_t j = 0; j <= i; ++j) row[j] = exp_approx(row[j] - shift);
            for (int64_t j = i + 1; j < T; ++j) row[j] = 0.0f;
          }
          // dP = dO V^T
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1.0f, dout, C, v, C3, 0.0f, dp, T);
          // dV (+)= P^T dO
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, p, T, dout, C, beta, dv, C3);
          // dS = P * (dP - D), in place in dP; zero above the diagonal.
          for (int64_t i = 0; i < T; ++i) {
            const float* oi = o + i * C;
            const float* doi = dout + i * C;
            float d = 0;
            for (int64_t x = 0; x < hs; ++x) d += oi[x] * doi[x];
            const float* prow = p + i * T;
            float* drow = dp + i * T;
            for (int64_t j = 0; j <= i; ++j) drow[j] = prow[j] * (drow[j] - d);
            for (int64_t j = i + 1; j < T; ++j) drow[j] = 0.0f;
          }
          // dQ = s dS K ; dK (+)= s dS^T Q
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, scale, dp, T, k, C3, 0.0f, dq, C3);
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, scale, dp, T, q, C3, beta, dk, C3);
        }
      }
    }
  }
}

}  // namespace tessera::cpu

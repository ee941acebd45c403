// The bf16 attention references of cuda_backend_test and their tolerance, checked on the CPU (Note [bf16
// attention references] in attention_reference.h), on the attention shapes of cuda_backend_test:
//   - cuDNN's roundings matter: the f32-P reference misses the cuDNN model by more than the plain bf16
//     tolerance (rtol 1e-2, atol 1e-3): in the forward by about the factor issue 12 reports (1.6x to 2.4x
//     here), in the backward by 4x to 11x;
//   - the tolerance is met: an independent f32 implementation with cuDNN's roundings, written here the way a
//     flash kernel works (key blocks of 32 with a running max, so it rounds some rows at another scale than the
//     model), stands in for the GPU and lies within rtol/atol plus the derived slack of the model;
//   - the slack does not hide bugs: the same stand-in with the causal mask dropped or the wrong key/value head
//     fails it.
// Each check prints its worst ratio |difference| / tolerance. No GPU is involved.
#include "tests/attention_reference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/bf16.h"

namespace tessera::testing {
namespace {

using Floats = std::vector<float>;

struct Shape {
  int64_t B, T, H, KV, hs;
};
// cuda_backend_test's bf16 attention shapes that cuDNN takes (hs a multiple of 8, T > 1).
constexpr Shape kShapes[] = {{2, 13, 3, 3, 8}, {1, 64, 4, 4, 16}, {2, 37, 3, 3, 24},  {1, 70, 2, 2, 128},
                             {2, 13, 3, 1, 8}, {2, 37, 6, 2, 24}, {1, 70, 4, 1, 128}, {1, 64, 32, 8, 64}};

std::string name(const Shape& s) {
  return std::to_string(s.B) + "x" + std::to_string(s.T) + "x" + std::to_string(s.H) + "x" + std::to_string(s.hs) +
         "_kv" + std::to_string(s.KV);
}

Floats bf16_values(std::mt19937& rng, size_t n) {
  std::normal_distribution<double> normal(0, 1);
  Floats v(n);
  for (float& x : v) x = round_to_bf16(static_cast<float>(normal(rng)));
  return v;
}

Floats stored(Floats v) {
  for (float& x : v) x = round_to_bf16(x);
  return v;
}

// max over elements of |got - want| / (atol + rtol |want| + slack): <= 1 passes cuda_backend_test's check.
double worst_ratio(const Floats& got, const Floats& want, const Floats* slack) {
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double allowed = 1e-3 + 1e-2 * std::abs(want[i]) + (slack != nullptr ? (*slack)[i] : 0.0f);
    worst = std::max(worst, std::abs(static_cast<double>(got[i]) - want[i]) / allowed);
  }
  return worst;
}

enum class Bug { kNone, kNoCausalMask, kWrongKeyValueHead };

// The GPU's stand-in: flash-style forward in f32, key blocks of 32, running max m' and sum l, exp(S - m') rounded
// to bf16 before it multiplies V, O rescaled when m' grows, divided by l at the end; out rounded to bf16.
Floats flash_forward_f32(const Floats& qkv, const Shape& s, Bug bug) {
  constexpr int64_t kBlock = 32;
  const int64_t C = s.H * s.hs, W = (s.H + 2 * s.KV) * s.hs;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.hs));
  Floats out(s.B * s.T * C);
  std::vector<float> acc(s.hs);
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t h = 0; h < s.H; ++h) {
      const int64_t g = (h / (s.H / s.KV) + (bug == Bug::kWrongKeyValueHead ? 1 : 0)) % s.KV;
      for (int64_t i = 0; i < s.T; ++i) {
        const int64_t last = bug == Bug::kNoCausalMask ? s.T - 1 : i;
        float m = -INFINITY, l = 0;
        std::fill(acc.begin(), acc.end(), 0.0f);
        for (int64_t j0 = 0; j0 <= last; j0 += kBlock) {
          const int64_t j1 = std::min(last + 1, j0 + kBlock);
          std::vector<float> S(j1 - j0);
          float m_new = m;
          for (int64_t j = j0; j < j1; ++j) {
            float dot = 0;
            for (int64_t d = 0; d < s.hs; ++d) {
              dot += qkv[(b * s.T + i) * W + h * s.hs + d] * qkv[(b * s.T + j) * W + C + g * s.hs + d];
            }
            S[j - j0] = dot * scale;
            m_new = std::max(m_new, S[j - j0]);
          }
          const float rescale = std::exp(m - m_new);
          l *= rescale;
          for (float& a : acc) a *= rescale;
          for (int64_t j = j0; j < j1; ++j) {
            const float e = std::exp(S[j - j0] - m_new);
            l += e;
            const float p = round_to_bf16(e);
            for (int64_t d = 0; d < s.hs; ++d) acc[d] += p * qkv[(b * s.T + j) * W + C + (s.KV + g) * s.hs + d];
          }
          m = m_new;
        }
        for (int64_t d = 0; d < s.hs; ++d) out[(b * s.T + i) * C + h * s.hs + d] = round_to_bf16(acc[d] / l);
      }
    }
  }
  return out;
}

// The GPU's stand-in for the backward: cuDNN's graph in f32 (P from lse, dS, the bf16 roundings, per-head dK and
// dV rounded when KV < H), d_qkv rounded to bf16.
Floats backward_f32(const Floats& d_out, const Floats& qkv, const Floats& out, const Floats& lse, const Shape& s) {
  const int64_t C = s.H * s.hs, W = (s.H + 2 * s.KV) * s.hs, T = s.T;
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.hs));
  std::vector<float> grad(qkv.size(), 0.0f), P(T * T), dS(T * T);
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t h = 0; h < s.H; ++h) {
      const int64_t g = h / (s.H / s.KV);
      const auto q = [&](int64_t t, int64_t d) { return qkv[(b * T + t) * W + h * s.hs + d]; };
      const auto k = [&](int64_t t, int64_t d) { return qkv[(b * T + t) * W + C + g * s.hs + d]; };
      const auto v = [&](int64_t t, int64_t d) { return qkv[(b * T + t) * W + C + (s.KV + g) * s.hs + d]; };
      const auto o = [&](const Floats& x, int64_t t, int64_t d) { return x[(b * T + t) * C + h * s.hs + d]; };
      for (int64_t i = 0; i < T; ++i) {
        float D = 0;
        for (int64_t d = 0; d < s.hs; ++d) D += o(d_out, i, d) * o(out, i, d);
        for (int64_t j = 0; j <= i; ++j) {
          float dot = 0, dP = 0;
          for (int64_t d = 0; d < s.hs; ++d) {
            dot += q(i, d) * k(j, d);
            dP += o(d_out, i, d) * v(j, d);
          }
          P[i * T + j] = std::exp(dot * scale - lse[(b * s.H + h) * T + i]);
          dS[i * T + j] = P[i * T + j] * (dP - D) * scale;
        }
      }
      for (int64_t i = 0; i < T; ++i) {
        for (int64_t d = 0; d < s.hs; ++d) {
          float sum = 0;
          for (int64_t j = 0; j <= i; ++j) sum += round_to_bf16(dS[i * T + j]) * k(j, d);
          grad[(b * T + i) * W + h * s.hs + d] = sum;
        }
      }
      for (int64_t j = 0; j < T; ++j) {
        for (int64_t d = 0; d < s.hs; ++d) {
          float dk = 0, dv = 0;
          for (int64_t i = j; i < T; ++i) {
            dk += round_to_bf16(dS[i * T + j]) * q(i, d);
            dv += round_to_bf16(P[i * T + j]) * o(d_out, i, d);
          }
          if (s.KV < s.H) dk = round_to_bf16(dk), dv = round_to_bf16(dv);
          grad[(b * T + j) * W + C + g * s.hs + d] += dk;
          grad[(b * T + j) * W + C + (s.KV + g) * s.hs + d] += dv;
        }
      }
    }
  }
  return stored(grad);
}

TEST(AttentionReferenceTest, CudnnRoundingExceedsThePlainToleranceAndTheDerivedOneHolds) {
  std::mt19937 rng(20250101);
  double worst_f32_forward = 0, worst_f32_backward = 0;
  for (const Shape& s : kShapes) {
    SCOPED_TRACE(name(s));
    const int64_t W = (s.H + 2 * s.KV) * s.hs, C = s.H * s.hs;
    const Floats qkv = bf16_values(rng, s.B * s.T * W);
    Floats f32_out, f32_lse, model_out, model_lse, slack;
    attention_forward_reference(qkv, s.B, s.T, s.H, s.KV, s.hs, AttentionRounding::kF32Probabilities, &f32_out,
                                &f32_lse, nullptr);
    attention_forward_reference(qkv, s.B, s.T, s.H, s.KV, s.hs, AttentionRounding::kCudnn, &model_out, &model_lse,
                                &slack);
    f32_out = stored(f32_out);
    model_out = stored(model_out);
    const Floats gpu = flash_forward_f32(qkv, s, Bug::kNone);
    const double f32_vs_model = worst_ratio(f32_out, model_out, nullptr);
    const double gpu_vs_model = worst_ratio(gpu, model_out, &slack);
    const double gpu_vs_model_no_slack = worst_ratio(gpu, model_out, nullptr);
    const double gpu_vs_f32 = worst_ratio(gpu, f32_out, nullptr);
    worst_f32_forward = std::max(worst_f32_forward, f32_vs_model);
    EXPECT_LE(gpu_vs_model, 1.0) << "the stand-in misses the cuDNN model's tolerance";
    const double no_mask = worst_ratio(flash_forward_f32(qkv, s, Bug::kNoCausalMask), model_out, &slack);
    const double wrong_head =
        s.KV > 1 ? worst_ratio(flash_forward_f32(qkv, s, Bug::kWrongKeyValueHead), model_out, &slack) : 0.0;
    EXPECT_GT(no_mask, 10.0) << "the slack would hide a missing causal mask";
    if (s.KV > 1) {
      EXPECT_GT(wrong_head, 10.0) << "the slack would hide a wrong key/value head";
    }

    // The backward from the f32 forward's results, as cuda_backend_test computes its inputs.
    const Floats d_out = bf16_values(rng, s.B * s.T * C);
    Floats f32_grad, model_grad, grad_slack;
    attention_backward_reference(d_out, qkv, f32_out, f32_lse, s.B, s.T, s.H, s.KV, s.hs,
                                 AttentionRounding::kF32Probabilities, &f32_grad, nullptr);
    attention_backward_reference(d_out, qkv, f32_out, f32_lse, s.B, s.T, s.H, s.KV, s.hs, AttentionRounding::kCudnn,
                                 &model_grad, &grad_slack);
    f32_grad = stored(f32_grad);
    model_grad = stored(model_grad);
    const Floats gpu_grad = backward_f32(d_out, qkv, f32_out, f32_lse, s);
    const double f32_vs_model_backward = worst_ratio(f32_grad, model_grad, nullptr);
    const double gpu_vs_model_backward = worst_ratio(gpu_grad, model_grad, &grad_slack);
    const double gpu_vs_model_backward_no_slack = worst_ratio(gpu_grad, model_grad, nullptr);
    worst_f32_backward = std::max(worst_f32_backward, f32_vs_model_backward);
    EXPECT_LE(gpu_vs_model_backward, 1.0) << "the backward stand-in misses the cuDNN model's tolerance";
    std::printf(
        "%-16s forward: f32-P vs cuDNN model %.2f, stand-in vs model %.2f (%.2f without slack; vs f32-P %.2f), "
        "no mask %.0f, wrong head %.0f; backward: f32-P vs model %.2f, stand-in vs model %.2f (%.2f without "
        "slack)\n",
        name(s).c_str(), f32_vs_model, gpu_vs_model, gpu_vs_model_no_slack, gpu_vs_f32, no_mask, wrong_head,
        f32_vs_model_backward, gpu_vs_model_backward, gpu_vs_model_backward_no_slack);
  }
  std::printf("worst f32-P vs cuDNN model under rtol 1e-2, atol 1e-3: forward %.2f, backward %.2f\n", worst_f32_forward,
              worst_f32_backward);
  // Issue 12: up to 1.7x on these shapes. The roundings must matter (else the model is pointless) and stay of
  // that order (else the model is wrong).
  // The backward's roundings of P and dS weigh more (dQ and dK are small differences): 4x to 11x here.
  EXPECT_GT(worst_f32_forward, 1.0);
  EXPECT_LT(worst_f32_forward, 3.0);
  EXPECT_GT(worst_f32_backward, 1.0);
}

}  // namespace
}  // namespace tessera::testing

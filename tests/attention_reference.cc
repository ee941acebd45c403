// Host attention references per engine (Note [bf16 attention references] in attention_reference.h): plain loops
// in double over one (batch, query head) at a time, with bf16 roundings where cuDNN rounds.
#include "tests/attention_reference.h"

#include <algorithm>
#include <cmath>

#include "core/bf16.h"

namespace tessera::testing {

namespace {

// The head geometry of the packed qkv[B, T, W] layout: W = (H + 2*KV)*hs, query head h at h*hs, its key head
// at C + g*hs and value head at C + (KV + g)*hs, g = h / (H/KV).
struct Heads {
  int64_t B, T, H, KV, hs;
  int64_t C() const { return H * hs; }
  int64_t W() const { return (H + 2 * KV) * hs; }
  int64_t q(int64_t b, int64_t t, int64_t h) const { return (b * T + t) * W() + h * hs; }
  int64_t k(int64_t b, int64_t t, int64_t h) const { return (b * T + t) * W() + C() + (h / (H / KV)) * hs; }
  int64_t v(int64_t b, int64_t t, int64_t h) const { return k(b, t, h) + KV * hs; }
  int64_t o(int64_t b, int64_t t, int64_t h) const { return (b * T + t) * C() + h * hs; }
};

double bf16(double x, bool round) { return round ? static_cast<double>(round_to_bf16(static_cast<float>(x))) : x; }

// S[i][j] = s q_i . k_j for j <= i, one (b, h).
std::vector<double> scores(const std::vector<float>& qkv, const Heads& g, int64_t b, int64_t h) {
  const double s = 1 / std::sqrt(static_cast<double>(g.hs));
  std::vector<double> S(static_cast<size_t>(g.T * g.T), 0.0);
  for (int64_t i = 0; i < g.T; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      double dot = 0;
      for (int64_t d = 0; d < g.hs; ++d) dot += static_cast<double>(qkv[g.q(b, i, h) + d]) * qkv[g.k(b, j, h) + d];
      S[i * g.T + j] = dot * s;
    }
  }
  return S;
}

}  // namespace

void attention_forward_reference(const std::vector<float>& qkv, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs,
                                 AttentionRounding rounding, std::vector<float>* out, std::vector<float>* lse,
                                 std::vector<float>* slack) {
  const Heads g{B, T, H, KV, hs};
  const bool cudnn = rounding == AttentionRounding::kCudnn;
  out->assign(B * T * g.C(), 0.0f);
  lse->assign(B * H * T, 0.0f);
  if (slack != nullptr) slack->assign(out->size(), 0.0f);
  std::vector<double> e(T);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const std::vector<double> S = scores(qkv, g, b, h);
      for (int64_t i = 0; i < T; ++i) {
        double m = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) m = std::max(m, S[i * T + j]);
        double l = 0;
        for (int64_t j = 0; j <= i; ++j) {
          e[j] = std::exp(S[i * T + j] - m);
          l += e[j];
        }
        for (int64_t d = 0; d < hs; ++d) {
          double o = 0, mass = 0;
          for (int64_t j = 0; j <= i; ++j) {
            const double value = qkv[g.v(b, j, h) + d];
            o += bf16(e[j], cudnn) * value;
            mass += e[j] * std::abs(value);
          }
          (*out)[g.o(b, i, h) + d] = static_cast<float>(o / l);
          if (slack != nullptr && cudnn)
            (*slack)[g.o(b, i, h) + d] = static_cast<float>(2 * kBf16UnitRoundoff * mass / l);
        }
        (*lse)[(b * H + h) * T + i] = static_cast<float>(m + std::log(l));
      }
    }
  }
}

void attention_backward_reference(const std::vector<float>& d_out, const std::vector<float>& qkv,
                                  const std::vector<float>& out, const std::vector<float>& lse, int64_t B, int64_t T,
                                  int64_t H, int64_t KV, int64_t hs, AttentionRounding rounding,
                                  std::vector<float>* d_qkv, std::vector<float>* slack) {
  const Heads g{B, T, H, KV, hs};
  const bool cudnn = rounding == AttentionRounding::kCudnn;
  const bool grouped = KV < H;
  const double s = 1 / std::sqrt(static_cast<double>(hs));
  const double u2 = 2 * kBf16UnitRoundoff;
  std::vector<double> grad(qkv.size(), 0.0), bound(qkv.size(), 0.0);
  std::vector<double> P(static_cast<size_t>(T * T)), dS(static_cast<size_t>(T * T));
  std::vector<double> dk(static_cast<size_t>(T * hs)), dv(static_cast<size_t>(T * hs));
  std::vector<double> dk_bound(static_cast<size_t>(T * hs)), dv_bound(static_cast<size_t>(T * hs));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const std::vector<double> S = scores(qkv, g, b, h);
      for (int64_t i = 0; i < T; ++i) {
        double D = 0;
        for (int64_t d = 0; d < hs; ++d) D += static_cast<double>(d_out[g.o(b, i, h) + d]) * out[g.o(b, i, h) + d];
        for (int64_t j = 0; j <= i; ++j) {
          P[i * T + j] = std::exp(S[i * T + j] - lse[(b * H + h) * T + i]);
          double dP = 0;
          for (int64_t d = 0; d < hs; ++d) dP += static_cast<double>(d_out[g.o(b, i, h) + d]) * qkv[g.v(b, j, h) + d];
          dS[i * T + j] = P[i * T + j] * (dP - D) * s;
        }
      }
      // dQ_i = sum_j dS_ij K_j (s is inside dS).
      for (int64_t i = 0; i < T; ++i) {
        for (int64_t d = 0; d < hs; ++d) {
          double sum = 0, mass = 0;
          for (int64_t j = 0; j <= i; ++j) {
            const double key = qkv[g.k(b, j, h) + d];
            sum += bf16(dS[i * T + j], cudnn) * key;
            mass += std::abs(dS[i * T + j] * key);
          }
          grad[g.q(b, i, h) + d] = sum;
          bound[g.q(b, i, h) + d] = u2 * mass;
        }
      }
      // This head's dK_j = sum_i dS_ij Q_i and dV_j = sum_i P_ij dO_i, over the queries i >= j.
      for (int64_t j = 0; j < T; ++j) {
        for (int64_t d = 0; d < hs; ++d) {
          double k_sum = 0, v_sum = 0, k_mass = 0, v_mass = 0;
          for (int64_t i = j; i < T; ++i) {
            const double query = qkv[g.q(b, i, h) + d], d_o = d_out[g.o(b, i, h) + d];
            k_sum += bf16(dS[i * T + j], cudnn) * query;
            v_sum += bf16(P[i * T + j], cudnn) * d_o;
            k_mass += std::abs(dS[i * T + j] * query);
            v_mass += std::abs(P[i * T + j] * d_o);
          }
          // cuDNN's per-head dK and dV of a group are bf16 before the sum over the group.
          dk[j * hs + d] = bf16(k_sum, cudnn && grouped);
          dv[j * hs + d] = bf16(v_sum, cudnn && grouped);
          dk_bound[j * hs + d] = u2 * k_mass + (grouped ? kBf16UnitRoundoff * std::abs(k_sum) : 0.0);
          dv_bound[j * hs + d] = u2 * v_mass + (grouped ? kBf16UnitRoundoff * std::abs(v_sum) : 0.0);
        }
      }
      for (int64_t j = 0; j < T; ++j) {
        for (int64_t d = 0; d < hs; ++d) {
          grad[g.k(b, j, h) + d] += dk[j * hs + d];
          grad[g.v(b, j, h) + d] += dv[j * hs + d];
          bound[g.k(b, j, h) + d] += dk_bound[j * hs + d];
          bound[g.v(b, j, h) + d] += dv_bound[j * hs + d];
        }
      }
    }
  }
  d_qkv->assign(grad.begin(), grad.end());
  if (slack != nullptr) {
    slack->assign(bound.size(), 0.0f);
    if (cudnn)
      std::transform(bound.begin(), bound.end(), slack->begin(), [](double x) { return static_cast<float>(x); });
  }
}

}  // namespace tessera::testing

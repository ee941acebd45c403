// Host references of causal grouped-query attention for the GPU parity test (cuda_backend_test), per engine,
// with the error bound its tolerance is derived from. Note [bf16 attention references].
//
// Tessera's own kernels (kernels/cuda/attention.cu) keep the probabilities P in f32 and round only what they
// store, as CpuBackend does. cuDNN's fused attention rounds to bf16 inside: the forward's P before P V, the
// backward's P before dV = P^T dO and dS before dK = dS^T Q and dQ = dS K, and with KV < H each query head's dK
// and dV before they are summed over the group (the graphs at the top of kernels/cuda/cudnn_attention.cc).
// Against the f32-P reference those roundings cost up to about twice the bf16 tolerance (rtol 1e-2, atol 1e-3)
// on the test's shapes (attention_reference_test prints the ratio), so the bf16 parity test compares cuDNN's
// results with a reference that rounds where cuDNN does.
//
// Note [bf16 attention references]
// The forward model follows a flash kernel: per query row, m = the row's max score, e_j = exp(S_j - m), the
// row sum l of the unrounded e_j, O = (sum_j bf16(e_j) V_j) / l, lse = m + log l. A kernel whose key blocks
// are shorter than the row rounds exp(S_j - m') with a running max m' <= m instead, which is a different
// rounding of the same P. The backward model is cuDNN's graph as written: P = exp(S - lse) from the given lse,
// exactly the values cuDNN rounds, up to f32 noise that can move a value across a rounding boundary.
// So the model is exact or one rounding of P off per term, and the tolerance adds to the usual bf16 rtol/atol a
// per-element slack that bounds that: every term t of a product whose operand was rounded to bf16 may differ
// by 2u|t| (both sides within u = 2^-8, bf16's unit roundoff, of the exact value), so
//   slack(out_id) = 2u sum_j P_ij |V_jd|,   slack(dV_jd) = 2u sum_i P_ij |dO_id|,
//   slack(dK_jd) = 2u s sum_i |dS_ij| |Q_id|,   slack(dQ_id) = 2u s sum_j |dS_ij| |K_jd|
// plus, with KV < H, u times the sum over the group's heads of |per-head dK| or |dV|. A bug (a wrong mask, head or
// stride) moves results by O(|values|), far beyond these sums' 2u = 0.8% of a row's absolute mass.
#pragma once

#include <cstdint>
#include <vector>

namespace tessera::testing {

enum class AttentionRounding {
  kF32Probabilities,  // Tessera's kernels and CpuBackend
  kCudnn,             // the bf16 roundings of cuDNN's fused attention
};

// bf16's unit roundoff: a rounded value is within kBf16UnitRoundoff * |x| of x.
constexpr double kBf16UnitRoundoff = 1.0 / 256;

// out[B,T,H*hs] and lse[B,H,T] from qkv[B,T,(H + 2*KV)*hs] (query head h reads key/value head h / (H/KV)), in
// double but for the modelled roundings; out is not rounded to its storage type (the caller does that).
// slack[B,T,H*hs] (may be null): the bound above for kCudnn, zeros for kF32Probabilities.
void attention_forward_reference(const std::vector<float>& qkv, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs,
                                 AttentionRounding rounding, std::vector<float>* out, std::vector<float>* lse,
                                 std::vector<float>* slack);

// d_qkv[B,T,(H + 2*KV)*hs] from d_out[B,T,H*hs] and the forward's qkv, out, lse, likewise; slack like d_qkv.
void attention_backward_reference(const std::vector<float>& d_out, const std::vector<float>& qkv,
                                  const std::vector<float>& out, const std::vector<float>& lse, int64_t B, int64_t T,
                                  int64_t H, int64_t KV, int64_t hs, AttentionRounding rounding,
                                  std::vector<float>* d_qkv, std::vector<float>* slack);

}  // namespace tessera::testing

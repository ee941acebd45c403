// bf16 on the host (core/bf16.h) and the CPU backend's bf16 storage (Note [bf16 on CPU] in
// kernels/cpu/cpu_backend.cc): every op with bf16 compute tensors must give exactly what the f32 op gives on the
// same (bf16-representable) inputs, rounded once to bf16 — the GPU's storage precision, which the mixed-precision
// model and its tolerances are checked against.
#include "core/bf16.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/check.h"
#include "kernels/cpu/cpu_backend.h"

namespace tessera {
namespace {

uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof(b));
  return b;
}

float float_of(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof(f));
  return f;
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // Exactly halfway between 0x3f80 and 0x3f81: to the even one (0x3f80); between 0x3f81 and 0x3f82: 0x3f82.
  EXPECT_EQ(f32_to_bf16(float_of(0x3f808000u)), 0x3f80);
  EXPECT_EQ(f32_to_bf16(float_of(0x3f818000u)), 0x3f82);
  // Just above and below halfway.
  EXPECT_EQ(f32_to_bf16(float_of(0x3f808001u)), 0x3f81);
  EXPECT_EQ(f32_to_bf16(float_of(0x3f807fffu)), 0x3f80);
  EXPECT_EQ(f32_to_bf16(-2.5f), 0xc020);
  EXPECT_EQ(f32_to_bf16(-0.0f), 0x8000);
}

TEST(Bf16, KeepsInfinitiesAndNaNsAndOverflowsToInfinity) {
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  // A NaN whose payload sits in the low bits only must not round into an infinity.
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(float_of(0x7f800001u)))));
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(bits_of(bf16_to_f32(0x3f80)), 0x3f800000u);
}

// ---- CpuBackend with bf16 tensors --------------------------------------------------------------------------

using Floats = std::vector<float>;

class CpuBf16 : public ::testing::Test {
 protected:
  CpuBackend backend_{2};
  std::mt19937 rng_{7};
  std::vector<Buffer> buffers_;

  // n values ~ N(0, stddev), already representable in bf16.
  Floats values(int64_t n, float stddev = 1.0f) {
    std::normal_distribution<float> normal(0.0f, stddev);
    Floats v(n);
    for (float& x : v) x = round_to_bf16(normal(rng_));
    return v;
  }

  Tensor make(DType dtype, std::initializer_list<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    buffers_.push_back(backend_.allocate(static_cast<size_t>(n) * dtype_size(dtype)));
    return buffers_.back().tensor(0, dtype, shape);
  }

  // A tensor of `dtype` holding `host` (which must be bf16-representable for a bf16 tensor).
  Tensor upload(const Floats& host, DType dtype, std::initializer_list<int64_t> shape) {
    Tensor t = make(dtype, shape);
    if (dtype == DType::kF32) {
      backend_.copy_from_host(t, host.data());
    } else {
      std::vector<uint16_t> bits(host.size());
      for (size_t i = 0; i < host.size(); ++i) bits[i] = f32_to_bf16(host[i]);
      backend_.copy_from_host(t, bits.data());
    }
    return t;
  }

  Floats download(const Tensor& t) {
    Floats out(t.numel());
    if (t.dtype() == DType::kF32) {
      backend_.copy_to_host(out.data(), t);
    } else {
      std::vector<uint16_t> bits(out.size());
      backend_.copy_to_host(bits.data(), t);
      for (size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_f32(bits[i]);
    }
    return out;
  }

  // The bf16 result must be the f32 result rounded to bf16, bit for bit.
  static void expect_rounded(const Floats& bf16_result, const Floats& f32_result, const std::string& what) {
    ASSERT_EQ(bf16_result.size(), f32_result.size()) << what;
    for (size_t i = 0; i < f32_result.size(); ++i) {
      ASSERT_EQ(bits_of(bf16_result[i]), bits_of(round_to_bf16(f32_result[i]))) << what << " element " << i;
    }
  }
};

TEST_F(CpuBf16, CopyConvertsBothWaysAndFillRounds) {
  const Floats x = {1.0f, float_of(0x3f808000u), -3.14159f, 1e-3f, 65504.0f};
  Tensor f = upload(x, DType::kF32, {5});
  Tensor h = make(DType::kBF16, {5});
  backend_.copy(h, f);
  Floats back = download(h);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(bits_of(back[i]), bits_of(round_to_bf16(x[i])));
  Tensor f2 = make(DType::kF32, {5});
  backend_.copy(f2, h);
  EXPECT_EQ(download(f2), back);
  backend_.fill(h, 0.1f);
  for (float v : download(h)) EXPECT_EQ(v, round_to_bf16(0.1f));
}

TEST_F(CpuBf16, MatmulForwardAndBackwardRoundOnceAndAccumulateF32Gradients) {
  const int64_t N = 13, C = 24, OC = 40;
  const Floats inp = values(N * C), w = values(OC * C, 0.2f), b = values(OC), d_out = values(N * OC);
  Tensor out32 = make(DType::kF32, {N, OC}), out16 = make(DType::kBF16, {N, OC});
  backend_.matmul_forward(out32, upload(inp, DType::kF32, {N, C}), upload(w, DType::kF32, {OC, C}),
                          upload(b, DType::kF32, {OC}));
  backend_.matmul_forward(out16, upload(inp, DType::kBF16, {N, C}), upload(w, DType::kBF16, {OC, C}),
                          upload(b, DType::kBF16, {OC}));
  expect_rounded(download(out16), download(out32), "out");

  // Gradients of the parameters are f32 in both cases and accumulate onto what they held (1.0 here).
  Tensor dw32 = upload(Floats(OC * C, 1.0f), DType::kF32, {OC, C}), db32 = upload(Floats(OC, 1.0f), DType::kF32, {OC});
  Tensor dw16 = upload(Floats(OC * C, 1.0f), DType::kF32, {OC, C}), db16 = upload(Floats(OC, 1.0f), DType::kF32, {OC});
  Tensor din32 = make(DType::kF32, {N, C}), din16 = make(DType::kBF16, {N, C});
  backend_.matmul_backward(din32, dw32, db32, upload(d_out, DType::kF32, {N, OC}), upload(inp, DType::kF32, {N, C}),
                           upload(w, DType::kF32, {OC, C}));
  backend_.matmul_backward(din16, dw16, db16, upload(d_out, DType::kBF16, {N, OC}), upload(inp, DType::kBF16, {N, C}),
                           upload(w, DType::kBF16, {OC, C}));
  expect_rounded(download(din16), download(din32), "d_inp");
  EXPECT_EQ(download(dw16), download(dw32));
  EXPECT_EQ(download(db16), download(db32));
}

TEST_F(CpuBf16, LayernormRoundsOnceAndItsBackwardAccumulatesIntoTheBf16ResidualGradient) {
  const int64_t N = 9, C = 72;
  const Floats x = values(N * C), w = values(C), b = values(C), d_out = values(N * C), prior = values(N * C);
  Floats outs[2], d_inps[2], dws[2];
  for (int k = 0; k < 2; ++k) {
    const DType d = k == 0 ? DType::kF32 : DType::kBF16;
    Tensor out = make(d, {N, C}), mean = make(DType::kF32, {N}), rstd = make(DType::kF32, {N});
    Tensor xt = upload(x, d, {N, C}), wt = upload(w, d, {C}), bt = upload(b, d, {C});
    backend_.layernorm_forward(out, mean, rstd, xt, wt, bt, 1e-5f);
    outs[k] = download(out);
    Tensor d_inp = upload(prior, d, {N, C});
    Tensor dw = upload(Floats(C, 0.0f), DType::kF32, {C}), db = upload(Floats(C, 0.0f), DType::kF32, {C});
    backend_.layernorm_backward(d_inp, dw, db, upload(d_out, d, {N, C}), xt, wt, mean, rstd);
    d_inps[k] = download(d_inp);
    dws[k] = download(dw);
  }
  expect_rounded(outs[1], outs[0], "out");
  expect_rounded(d_inps[1], d_inps[0], "d_inp (prior + gradient)");
  EXPECT_EQ(dws[1], dws[0]);
}

TEST_F(CpuBf16, AddMayAliasItsOutputAndCrossEntropyWritesTheGradientInPlace) {
  const int64_t n = 100;
  const Floats a = values(n), b = values(n);
  Tensor a16 = upload(a, DType::kBF16, {n});
  backend_.add(a16, a16, upload(b, DType::kBF16, {n}));
  Floats sum(n);
  for (int64_t i = 0; i < n; ++i) sum[i] = a[i] + b[i];
  expect_rounded(download(a16), sum, "a += b");

  const int64_t N = 6, V = 50, valid = 47;
  const Floats logits = values(N * V, 2.0f);
  std::vector<int32_t> targets = {0, 5, 46, 12, 30, 1};
  Floats grads[2], losses[2];
  for (int k = 0; k < 2; ++k) {
    const DType d = k == 0 ? DType::kF32 : DType::kBF16;
    Tensor lt = upload(logits, d, {N, V});
    Tensor tt = make(DType::kI32, {N});
    backend_.copy_from_host(tt, targets.data());
    Tensor row_max = make(DType::kF32, {N}), sum_exp = make(DType::kF32, {N}), target = make(DType::kF32, {N});
    Tensor loss = make(DType::kF32, {N});
    backend_.cross_entropy_row_max(row_max, lt, valid);
    backend_.cross_entropy_row_stats(sum_exp, target, lt, row_max, tt, 0, valid);
    backend_.cross_entropy_loss_backward(loss, lt, row_max, sum_exp, target, tt, Tensor(), 0, valid, 0.25f);
    grads[k] = download(lt);
    losses[k] = download(loss);
  }
  EXPECT_EQ(losses[1], losses[0]);  // f32 statistics from the same (bf16-representable) logits
  expect_rounded(grads[1], grads[0], "d_logits");
}

TEST_F(CpuBf16, RmsnormRoundsOnceAndItsBackwardAccumulatesIntoTheBf16ResidualGradient) {
  const int64_t N = 9, C = 72;
  const Floats x = values(N * C), w = values(C), d_out = values(N * C), prior = values(N * C);
  Floats outs[2], rstds[2], d_inps[2], dws[2];
  for (int k = 0; k < 2; ++k) {
    const DType d = k == 0 ? DType::kF32 : DType::kBF16;
    Tensor out = make(d, {N, C}), rstd = make(DType::kF32, {N});
    Tensor xt = upload(x, d, {N, C}), wt = upload(w, d, {C});
    backend_.rmsnorm_forward(out, rstd, xt, wt, 1e-5f);
    outs[k] = download(out);
    rstds[k] = download(rstd);
    Tensor d_inp = upload(prior, d, {N, C});
    Tensor dw = upload(Floats(C, 0.5f), DType::kF32, {C});
    backend_.rmsnorm_backward(d_inp, dw, upload(d_out, d, {N, C}), xt, wt, rstd);
    d_inps[k] = download(d_inp);
    dws[k] = download(dw);
  }
  expect_rounded(outs[1], outs[0], "out");
  EXPECT_EQ(rstds[1], rstds[0]);
  expect_rounded(d_inps[1], d_inps[0], "d_inp (prior + gradient)");
  EXPECT_EQ(dws[1], dws[0]);
}

TEST_F(CpuBf16, ResidualRmsnormRoundsTheResidualAndTheNormalizedOutputOnce) {
  const int64_t N = 5, C = 40;
  const Floats a = values(N * C), b = values(N * C), w = values(C);
  Floats residuals[2], outs[2], rstds[2];
  for (int k = 0; k < 2; ++k) {
    const DType d = k == 0 ? DType::kF32 : DType::kBF16;
    Tensor at = upload(a, d, {N, C}), out = make(d, {N, C}), rstd = make(DType::kF32, {N});
    backend_.residual_rmsnorm_forward(at, out, rstd, at, upload(b, d, {N, C}), upload(w, d, {C}), 1e-5f);
    residuals[k] = download(at);
    outs[k] = download(out);
    rstds[k] = download(rstd);
  }
  expect_rounded(residuals[1], residuals[0], "residual");
  // The bf16 op normalizes the residual as stored (rounded): the f32 op on that residual, rounded once.
  Tensor residual32 = upload(residuals[1], DType::kF32, {N, C});
  Tensor out32 = make(DType::kF32, {N, C}), rstd32 = make(DType::kF32, {N});
  backend_.rmsnorm_forward(out32, rstd32, residual32, upload(w, DType::kF32, {C}), 1e-5f);
  expect_rounded(outs[1], download(out32), "out");
  EXPECT_EQ(rstds[1], download(rstd32));
}

TEST_F(CpuBf16, RopeRotatesInPlaceAndRoundsOnce) {
  const int64_t B = 2, T = 13, H = 4, KV = 2, hs = 16, W = (H + 2 * KV) * hs;
  const Floats qkv = values(B * T * W), d_qkv = values(B * T * W);
  Floats forwards[2], backwards[2];
  for (int k = 0; k < 2; ++k) {
    const DType d = k == 0 ? DType::kF32 : DType::kBF16;
    Tensor x = upload(qkv, d, {B, T, W}), g = upload(d_qkv, d, {B, T, W});
    backend_.rope_forward(x, static_cast<int>(H), static_cast<int>(KV), static_cast<int>(T), 10000.0f);
    backend_.rope_backward(g, static_cast<int>(H), static_cast<int>(KV), static_cast<int>(T), 10000.0f);
    forwards[k] = download(x);
    backwards[k] = download(g);
  }
  expect_rounded(forwards[1], forwards[0], "rope_forward");
  expect_rounded(backwards[1], backwards[0], "rope_backward");
}

TEST_F(CpuBf16, SwigluForwardAndBackwardRoundOnce) {
  const int64_t N = 7, F = 45;
  const Floats gate_up = values(N * 2 * F, 3.0f), d_out = values(N * F);
  Floats outs[2], grads[2];
  for (int k = 0; k < 2; ++k) {
    const DType d = k == 0 ? DType::kF32 : DType::kBF16;
    Tensor out = make(d, {N, F}), d_gate_up = make(d, {N, 2 * F}), gu = upload(gate_up, d, {N, 2 * F});
    backend_.swiglu_forward(out, gu);
    backend_.swiglu_backward(d_gate_up, upload(d_out, d, {N, F}), gu);
    outs[k] = download(out);
    grads[k] = download(d_gate_up);
  }
  expect_rounded(outs[1], outs[0], "out");
  expect_rounded(grads[1], grads[0], "d_gate_up");
}

// Multi-head (KV == H) and grouped-query attention.
TEST_F(CpuBf16, AttentionForwardAndBackwardRoundOnce) {
  const int64_t B = 2, T = 11, H = 6, hs = 8, C = H * hs;
  for (const int64_t KV : {H, int64_t{2}, int64_t{1}}) {
    const int64_t W = (H + 2 * KV) * hs;
    const Floats qkv = values(B * T * W), d_out = values(B * T * C);
    Floats outs[2], lses[2], d_qkvs[2];
    for (int k = 0; k < 2; ++k) {
      const DType d = k == 0 ? DType::kF32 : DType::kBF16;
      Tensor out = make(d, {B, T, C}), lse = make(DType::kF32, {B, H, T});
      backend_.attention_forward(out, lse, upload(qkv, d, {B, T, W}), static_cast<int>(H), static_cast<int>(KV));
      outs[k] = download(out);
      lses[k] = download(lse);
    }
    expect_rounded(outs[1], outs[0], "out, KV = " + std::to_string(KV));
    EXPECT_EQ(lses[1], lses[0]) << "KV = " << KV;
    // The backward reads what the forward saved; both dtypes get the same (bf16-representable) output.
    Floats saved(outs[0].size());
    for (size_t i = 0; i < saved.size(); ++i) saved[i] = round_to_bf16(outs[0][i]);
    for (int k = 0; k < 2; ++k) {
      const DType d = k == 0 ? DType::kF32 : DType::kBF16;
      Tensor d_qkv = make(d, {B, T, W});
      backend_.attention_backward(d_qkv, upload(d_out, d, {B, T, C}), upload(qkv, d, {B, T, W}),
                                  upload(saved, d, {B, T, C}), upload(lses[0], DType::kF32, {B, H, T}),
                                  static_cast<int>(H), static_cast<int>(KV));
      d_qkvs[k] = download(d_qkv);
    }
    expect_rounded(d_qkvs[1], d_qkvs[0], "d_qkv, KV = " + std::to_string(KV));
  }
}

TEST_F(CpuBf16, AdamWWritesTheRoundedCopyOfTheMasterWeights) {
  const int64_t n = 257;
  const Floats p = values(n), g = values(n);
  Tensor param = upload(p, DType::kF32, {n}), grad = upload(g, DType::kF32, {n});
  Tensor m = upload(Floats(n, 0.0f), DType::kF32, {n}), v = upload(Floats(n, 0.0f), DType::kF32, {n});
  Tensor copy = make(DType::kBF16, {n});
  AdamWStep step;
  step.lr = 1e-3f;
  step.weight_decay = 0.1f;
  backend_.adamw_update(param, grad, m, v, step, copy);
  expect_rounded(download(copy), download(param), "param_copy");
}

TEST_F(CpuBf16, MixingComputeDtypesInOneOpIsAnInternalError) {
  Tensor a = make(DType::kBF16, {4}), b = make(DType::kF32, {4}), out = make(DType::kBF16, {4});
  EXPECT_THROW(backend_.add(out, a, b), InternalError);
  Tensor i = make(DType::kI32, {4});
  EXPECT_THROW(backend_.gelu_forward(i, i), InternalError);
}

}  // namespace
}  // namespace tessera

// Table-driven tests of every CpuBackend op against independent double-precision references.
//
// Each reference below is written from the math in core/backend.h as plain loops in double, not from the
// kernels. Forward outputs (fp32) are compared with the reference under an fp32 tolerance; gradients are
// compared with central finite differences of the double reference forward on the scalar loss
// L = sum(out * R) for a fixed random R, so that d_out = R. Outputs a contract calls "overwrites" are
// poisoned with NaN before the call; outputs it calls "accumulates" are pre-filled with random values and
// must come back as prefill + gradient. Finite differences run on tiny shapes only; realistic sizes check
// forward passes (and the matmul backward against its closed form) so the whole binary stays fast.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iomanip>
#include <limits>
#include <numbers>
#include <numeric>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/fast_math.h"

namespace tessera {
namespace {

using Doubles = std::vector<double>;
using Floats = std::vector<float>;
using Ints = std::vector<int32_t>;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int kThreads = 2;
constexpr uint32_t kSeed = 20240611;

// ---- random inputs ----------------------------------------------------------------------------------------

class Rng {
 public:
  explicit Rng(uint32_t seed) : generator_(seed) {}

  Floats normal(int64_t n, double stddev = 1, double mean = 0) {
    std::normal_distribution<double> distribution(mean, stddev);
    Floats values(n);
    for (float& x : values) x = static_cast<float>(distribution(generator_));
    return values;
  }
  Floats uniform(int64_t n, double low, double high) {
    std::uniform_real_distribution<double> distribution(low, high);
    Floats values(n);
    for (float& x : values) x = static_cast<float>(distribution(generator_));
    return values;
  }
  // Integers in [low, high].
  Ints integers(int64_t n, int32_t low, int32_t high) {
    std::uniform_int_distribution<int32_t> distribution(low, high);
    Ints values(n);
    for (int32_t& x : values) x = distribution(generator_);
    return values;
  }

 private:
  std::mt19937 generator_;
};

// ---- tensors owned by the backend under test ---------------------------------------------------------------

struct DeviceTensor {
  Buffer buffer;
  Tensor tensor;  // undefined for DeviceTensor{}, which stands for "none" in optional arguments
};

int64_t numel_of(std::initializer_list<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

DeviceTensor device_tensor(Backend& backend, DType dtype, std::initializer_list<int64_t> shape) {
  DeviceTensor t;
  t.buffer = backend.allocate(static_cast<size_t>(numel_of(shape)) * dtype_size(dtype));
  t.tensor = t.buffer.tensor(0, dtype, shape);
  return t;
}

DeviceTensor upload(Backend& backend, const Floats& host, std::initializer_list<int64_t> shape) {
  TS_ASSERT(std::ssize(host) == numel_of(shape), "host data does not match the shape");
  DeviceTensor t = device_tensor(backend, DType::kF32, shape);
  backend.copy_from_host(t.tensor, host.data());
  return t;
}

DeviceTensor upload(Backend& backend, const Ints& host, std::initializer_list<int64_t> shape) {
  TS_ASSERT(std::ssize(host) == numel_of(shape), "host data does not match the shape");
  DeviceTensor t = device_tensor(backend, DType::kI32, shape);
  backend.copy_from_host(t.tensor, host.data());
  return t;
}

// An output the op must overwrite entirely: any element it skips stays NaN and fails the comparison.
DeviceTensor poisoned(Backend& backend, std::initializer_list<int64_t> shape) {
  return upload(backend, Floats(numel_of(shape), kNaN), shape);
}

Floats download(Backend& backend, const Tensor& t) {
  Floats host(t.numel());
  backend.copy_to_host(host.data(), t);
  return host;
}

// ---- comparisons ------------------------------------------------------------------------------------------

// |got - want| <= atol + rtol * |want|, elementwise; NaN never passes.
struct Tolerance {
  double rtol;
  double atol;
};
constexpr Tolerance kExact{0, 0};

::testing::AssertionResult all_close(const Floats& got, const Doubles& want, Tolerance tolerance) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "got " << got.size() << " values, want " << want.size();
  }
  int64_t mismatches = 0;
  double worst = 0;
  std::ostringstream first;
  first << std::setprecision(9);
  for (size_t i = 0; i < got.size(); ++i) {
    double error = std::abs(static_cast<double>(got[i]) - want[i]);
    if (!(error <= tolerance.atol + tolerance.rtol * std::abs(want[i]))) {
      if (mismatches < 8) first << "\n  [" << i << "] got " << got[i] << ", want " << want[i];
      ++mismatches;
    }
    if (!std::isnan(error)) worst = std::max(worst, error);
  }
  if (mismatches > 0) {
    return ::testing::AssertionFailure() << mismatches << " of " << got.size() << " values differ (rtol "
                                         << tolerance.rtol << ", atol " << tolerance.atol << "; largest finite error "
                                         << worst << ")" << first.str();
  }
  return ::testing::AssertionSuccess();
}

Doubles to_doubles(const Floats& v) { return Doubles(v.begin(), v.end()); }

Floats to_floats(const Doubles& v) {
  Floats out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(v[i]);
  return out;
}

// prefill + delta: what an output that accumulates must hold after the op.
Doubles plus(const Floats& prefill, const Doubles& delta) {
  Doubles out(delta.size());
  for (size_t i = 0; i < delta.size(); ++i) out[i] = prefill[i] + delta[i];
  return out;
}

double dot(const Doubles& a, const Doubles& b) {
  double sum = 0;
  for (size_t i = 0; i < a.size(); ++i) sum += a[i] * b[i];
  return sum;
}

// dL/dx by central differences, one coordinate at a time. In double with h = 1e-6 the truncation error is
// ~1e-12 and the rounding error ~1e-10 * |L|, far below any fp32 tolerance used here.
Doubles numeric_gradient(const std::function<double(const Doubles&)>& loss, Doubles x) {
  constexpr double kStep = 1e-6;
  Doubles gradient(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double saved = x[i];
    x[i] = saved + kStep;
    double up = loss(x);
    x[i] = saved - kStep;
    double down = loss(x);
    x[i] = saved;
    gradient[i] = (up - down) / (2 * kStep);
  }
  return gradient;
}

// ---- double-precision references, written from the contracts in core/backend.h ------------------------------

// out[N,OC] = inp[N,C] weight[OC,C]^T + bias[OC] (bias empty: none).
Doubles matmul_reference(const Doubles& inp, const Doubles& weight, const Doubles& bias, int64_t N, int64_t C,
                         int64_t OC) {
  Doubles out(N * OC);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t o = 0; o < OC; ++o) {
      double sum = bias.empty() ? 0.0 : bias[o];
      for (int64_t c = 0; c < C; ++c) sum += inp[n * C + c] * weight[o * C + c];
      out[n * OC + o] = sum;
    }
  }
  return out;
}

// Per row of [N,C]: biased variance, rstd = 1/sqrt(var + eps), out = (x - mean) * rstd * weight + bias.
Doubles layernorm_reference(const Doubles& inp, const Doubles& weight, const Doubles& bias, double eps, int64_t N,
                            int64_t C, Doubles* mean_out = nullptr, Doubles* rstd_out = nullptr) {
  Doubles out(N * C);
  for (int64_t n = 0; n < N; ++n) {
    const double* x = &inp[n * C];
    double mean = 0;
    for (int64_t c = 0; c < C; ++c) mean += x[c];
    mean /= static_cast<double>(C);
    double variance = 0;
    for (int64_t c = 0; c < C; ++c) variance += (x[c] - mean) * (x[c] - mean);
    variance /= static_cast<double>(C);
    double rstd = 1 / std::sqrt(variance + eps);
    for (int64_t c = 0; c < C; ++c) out[n * C + c] = (x[c] - mean) * rstd * weight[c] + bias[c];
    if (mean_out != nullptr) (*mean_out)[n] = mean;
    if (rstd_out != nullptr) (*rstd_out)[n] = rstd;
  }
  return out;
}

// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
Doubles gelu_reference(const Doubles& inp) {
  const double k = std::sqrt(2 / std::numbers::pi);
  Doubles out(inp.size());
  for (size_t i = 0; i < inp.size(); ++i) {
    double x = inp[i];
    out[i] = 0.5 * x * (1 + std::tanh(k * (x + 0.044715 * x * x * x)));
  }
  return out;
}

// Causal grouped-query attention over qkv[B,T,(H + 2*KV)*hs] (rows [Q heads | K heads | V heads], KV key/value
// heads, query head h reading key/value head h / (H/KV)); out[B,T,H*hs], lse[B,H,T]: the log-sum-exp of each query
// row's scaled scores over the keys it sees.
Doubles attention_reference(const Doubles& qkv, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hs,
                            Doubles* lse_out = nullptr) {
  const int64_t C = H * hs, W = (H + 2 * KV) * hs;
  const double scale = 1 / std::sqrt(static_cast<double>(hs));
  Doubles out(B * T * C, 0.0);
  Doubles lse(B * H * T, 0.0);
  Doubles probs(T);
  Doubles scores(T);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / KV);
      for (int64_t t = 0; t < T; ++t) {
        const double* q = &qkv[(b * T + t) * W + h * hs];
        double max_score = -std::numeric_limits<double>::infinity();
        for (int64_t u = 0; u <= t; ++u) {
          const double* k = &qkv[(b * T + u) * W + C + g * hs];
          double s = 0;
          for (int64_t i = 0; i < hs; ++i) s += q[i] * k[i];
          scores[u] = s * scale;
          max_score = std::max(max_score, scores[u]);
        }
        double total = 0;
        for (int64_t u = 0; u <= t; ++u) total += std::exp(scores[u] - max_score);
        lse[(b * H + h) * T + t] = max_score + std::log(total);
        double* p = probs.data();
        for (int64_t u = 0; u <= t; ++u) p[u] = std::exp(scores[u] - max_score) / total;
        double* o = &out[(b * T + t) * C + h * hs];
        for (int64_t u = 0; u <= t; ++u) {
          const double* v = &qkv[(b * T + u) * W + C + KV * hs + g * hs];
          for (int64_t i = 0; i < hs; ++i) o[i] += p[u] * v[i];
        }
      }
    }
  }
  if (lse_out != nullptr) *lse_out = lse;
  return out;
}

// out[N,C] = wte[token - vocab_start] if the token is in [vocab_start, vocab_start + V_local), else 0,
// plus wpe[n % seq_len] (wpe empty: none).
Doubles embedding_reference(const Ints& tokens, const Doubles& wte, const Doubles& wpe, int64_t C, int64_t V_local,
                            int64_t seq_len, int64_t vocab_start) {
  const int64_t N = std::ssize(tokens);
  Doubles out(N * C, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    int64_t row = tokens[n] - vocab_start;
    for (int64_t c = 0; c < C; ++c) {
      double value = (row >= 0 && row < V_local) ? wte[row * C + c] : 0.0;
      if (!wpe.empty()) value += wpe[(n % seq_len) * C + c];
      out[n * C + c] = value;
    }
  }
  return out;
}

// Full-vocabulary softmax cross-entropy over logits[N,V]: loss[n] = logsumexp(row) - row[target].
Doubles cross_entropy_reference(const Doubles& logits, const Ints& targets, int64_t N, int64_t V,
                                Doubles* softmax_out = nullptr) {
  Doubles losses(N);
  Doubles softmax(N * V);
  for (int64_t n = 0; n < N; ++n) {
    const double* row = &logits[n * V];
    double max_logit = *std::max_element(row, row + V);
    double total = 0;
    for (int64_t j = 0; j < V; ++j) total += std::exp(row[j] - max_logit);
    for (int64_t j = 0; j < V; ++j) softmax[n * V + j] = std::exp(row[j] - max_logit) / total;
    losses[n] = std::log(total) + max_logit - row[targets[n]];
  }
  if (softmax_out != nullptr) *softmax_out = softmax;
  return losses;
}

// One step of PyTorch's AdamW (torch.optim.AdamW, foreach=False), in double.
void adamw_reference(Doubles& param, Doubles& m, Doubles& v, const Floats& grad, const AdamWStep& s) {
  const double lr = s.lr, beta1 = s.beta1, beta2 = s.beta2, eps = s.eps;
  const double step = static_cast<double>(s.step);
  const double bias_correction1 = 1 - std::pow(beta1, step);
  const double bias_correction2 = 1 - std::pow(beta2, step);
  for (size_t i = 0; i < param.size(); ++i) {
    double g = static_cast<double>(grad[i]) * s.grad_scale;
    param[i] *= 1 - lr * s.weight_decay;
    m[i] = beta1 * m[i] + (1 - beta1) * g;
    v[i] = beta2 * v[i] + (1 - beta2) * g * g;
    double denominator = std::sqrt(v[i]) / std::sqrt(bias_correction2) + eps;
    param[i] -= lr / bias_correction1 * m[i] / denominator;
  }
}

// ---- parameterized fixtures -------------------------------------------------------------------------------

// Every case struct has a `name`, used as the gtest parameter name (letters, digits, underscores).
template <typename Case>
requires requires(const Case& c) {
  { c.name } -> std::convertible_to<std::string>;
}
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

struct CaseName {
  template <typename Case>
  std::string operator()(const ::testing::TestParamInfo<Case>& info) const {
    return info.param.name;
  }
};

template <typename Case>
class KernelTest : public ::testing::TestWithParam<Case> {
 protected:
  CpuBackend backend_{kThreads};
  Rng rng_{kSeed};
};

// ---- matmul -----------------------------------------------------------------------------------------------

struct MatmulCase {
  std::string name;
  int64_t N, C, OC;
  bool bias;   // forward: bias defined; backward: d_bias defined
  bool d_inp;  // backward: d_inp defined
};

// Inputs ~ N(0,1), weights ~ N(0, 1/C): outputs O(1), each a sum of C products.
Tolerance matmul_tolerance(int64_t terms) { return {1e-5, 2e-6 * std::sqrt(static_cast<double>(terms))}; }

class MatmulForward : public KernelTest<MatmulCase> {};

TEST_P(MatmulForward, MatchesDoubleReference) {
  const MatmulCase& c = GetParam();
  Floats inp = rng_.normal(c.N * c.C);
  Floats weight = rng_.normal(c.OC * c.C, 1 / std::sqrt(static_cast<double>(c.C)));
  Floats bias = c.bias ? rng_.normal(c.OC) : Floats();
  DeviceTensor inp_t = upload(backend_, inp, {c.N, c.C});
  DeviceTensor weight_t = upload(backend_, weight, {c.OC, c.C});
  DeviceTensor bias_t = c.bias ? upload(backend_, bias, {c.OC}) : DeviceTensor{};
  DeviceTensor out_t = poisoned(backend_, {c.N, c.OC});

  backend_.matmul_forward(out_t.tensor, inp_t.tensor, weight_t.tensor, bias_t.tensor);

  Doubles want = matmul_reference(to_doubles(inp), to_doubles(weight), to_doubles(bias), c.N, c.C, c.OC);
  EXPECT_TRUE(all_close(download(backend_, out_t.tensor), want, matmul_tolerance(c.C)));
}

INSTANTIATE_TEST_SUITE_P(Cpu, MatmulForward,
                         ::testing::Values(MatmulCase{"N1_C1_OC1", 1, 1, 1, true, true},
                                           MatmulCase{"N1_C3_OC5_NoBias", 1, 3, 5, false, true},
                                           MatmulCase{"N7_C5_OC3", 7, 5, 3, true, true},
                                           MatmulCase{"N13_C17_OC11_NoBias", 13, 17, 11, false, true},
                                           MatmulCase{"N33_C64_OC129", 33, 64, 129, true, true},
                                           MatmulCase{"N256_C768_OC768", 256, 768, 768, true, true},
                                           MatmulCase{"N64_C768_OC2304_NoBias", 64, 768, 2304, false, true}),
                         CaseName());

// d_inp overwrites, d_weight and d_bias accumulate; all checked against finite differences.
class MatmulBackward : public KernelTest<MatmulCase> {};

TEST_P(MatmulBackward, MatchesFiniteDifferences) {
  const MatmulCase& c = GetParam();
  Floats inp = rng_.normal(c.N * c.C);
  Floats weight = rng_.normal(c.OC * c.C);
  Floats d_out = rng_.normal(c.N * c.OC);
  Floats d_weight_prefill = rng_.normal(c.OC * c.C);
  Floats d_bias_prefill = rng_.normal(c.OC);
  DeviceTensor inp_t = upload(backend_, inp, {c.N, c.C});
  DeviceTensor weight_t = upload(backend_, weight, {c.OC, c.C});
  DeviceTensor d_out_t = upload(backend_, d_out, {c.N, c.OC});
  DeviceTensor d_inp_t = c.d_inp ? poisoned(backend_, {c.N, c.C}) : DeviceTensor{};
  DeviceTensor d_weight_t = upload(backend_, d_weight_prefill, {c.OC, c.C});
  DeviceTensor d_bias_t = c.bias ? upload(backend_, d_bias_prefill, {c.OC}) : DeviceTensor{};

  backend_.matmul_backward(d_inp_t.tensor, d_weight_t.tensor, d_bias_t.tensor, d_out_t.tensor, inp_t.tensor,
                           weight_t.tensor);

  const Doubles x = to_doubles(inp), w = to_doubles(weight), r = to_doubles(d_out);
  const Doubles b(c.OC, 0.5);
  auto loss = [&](const Doubles& x_, const Doubles& w_, const Doubles& b_) {
    return dot(matmul_reference(x_, w_, b_, c.N, c.C, c.OC), r);
  };
  const Tolerance tolerance{1e-5, 1e-5};
  if (c.d_inp) {
    Doubles want = numeric_gradient([&](const Doubles& v) { return loss(v, w, b); }, x);
    EXPECT_TRUE(all_close(download(backend_, d_inp_t.tensor), want, tolerance)) << "d_inp";
  }
  Doubles want_d_weight = numeric_gradient([&](const Doubles& v) { return loss(x, v, b); }, w);
  EXPECT_TRUE(all_close(download(backend_, d_weight_t.tensor), plus(d_weight_prefill, want_d_weight), tolerance))
      << "d_weight";
  if (c.bias) {
    Doubles want = numeric_gradient([&](const Doubles& v) { return loss(x, w, v); }, b);
    EXPECT_TRUE(all_close(download(backend_, d_bias_t.tensor), plus(d_bias_prefill, want), tolerance)) << "d_bias";
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, MatmulBackward,
                         ::testing::Values(MatmulCase{"N1_C1_OC1", 1, 1, 1, true, true},
                                           MatmulCase{"N1_C3_OC5", 1, 3, 5, true, true},
                                           MatmulCase{"N7_C5_OC3_NoDInp", 7, 5, 3, true, false},
                                           MatmulCase{"N4_C6_OC9_NoDBias", 4, 6, 9, false, true},
                                           MatmulCase{"N5_C16_OC7_NoDInpNoDBias", 5, 16, 7, false, false},
                                           MatmulCase{"N9_C13_OC10", 9, 13, 10, true, true}),
                         CaseName());

// Realistic sizes are too large for finite differences; the reference is the closed form of the gradient of
// L = sum(out * R): d_inp = R W, d_weight = R^T inp, d_bias = column sums of R.
class MatmulBackwardLarge : public KernelTest<MatmulCase> {};

TEST_P(MatmulBackwardLarge, MatchesClosedFormGradient) {
  const MatmulCase& c = GetParam();
  Floats inp = rng_.normal(c.N * c.C);
  Floats weight = rng_.normal(c.OC * c.C, 1 / std::sqrt(static_cast<double>(c.C)));
  Floats d_out = rng_.normal(c.N * c.OC);
  Floats d_weight_prefill = rng_.normal(c.OC * c.C);
  Floats d_bias_prefill = rng_.normal(c.OC);
  DeviceTensor inp_t = upload(backend_, inp, {c.N, c.C});
  DeviceTensor weight_t = upload(backend_, weight, {c.OC, c.C});
  DeviceTensor d_out_t = upload(backend_, d_out, {c.N, c.OC});
  DeviceTensor d_inp_t = c.d_inp ? poisoned(backend_, {c.N, c.C}) : DeviceTensor{};
  DeviceTensor d_weight_t = upload(backend_, d_weight_prefill, {c.OC, c.C});
  DeviceTensor d_bias_t = c.bias ? upload(backend_, d_bias_prefill, {c.OC}) : DeviceTensor{};

  backend_.matmul_backward(d_inp_t.tensor, d_weight_t.tensor, d_bias_t.tensor, d_out_t.tensor, inp_t.tensor,
                           weight_t.tensor);

  Doubles want_d_inp(c.N * c.C, 0.0), want_d_weight(c.OC * c.C, 0.0), want_d_bias(c.OC, 0.0);
  for (int64_t n = 0; n < c.N; ++n) {
    for (int64_t o = 0; o < c.OC; ++o) {
      const double r = d_out[n * c.OC + o];
      want_d_bias[o] += r;
      for (int64_t k = 0; k < c.C; ++k) {
        want_d_inp[n * c.C + k] += r * weight[o * c.C + k];
        want_d_weight[o * c.C + k] += r * inp[n * c.C + k];
      }
    }
  }
  if (c.d_inp) {
    EXPECT_TRUE(all_close(download(backend_, d_inp_t.tensor), want_d_inp, matmul_tolerance(c.OC))) << "d_inp";
  }
  // d_weight and d_bias sum N products of O(1) numbers.
  const Tolerance sum_over_rows{1e-5, 1e-5 * std::sqrt(static_cast<double>(c.N))};
  EXPECT_TRUE(all_close(download(backend_, d_weight_t.tensor), plus(d_weight_prefill, want_d_weight), sum_over_rows))
      << "d_weight";
  if (c.bias) {
    EXPECT_TRUE(all_close(download(backend_, d_bias_t.tensor), plus(d_bias_prefill, want_d_bias), sum_over_rows))
        << "d_bias";
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, MatmulBackwardLarge,
                         ::testing::Values(MatmulCase{"N256_C768_OC768", 256, 768, 768, true, true},
                                           MatmulCase{"N64_C768_OC2304_NoDInp", 64, 768, 2304, true, false},
                                           MatmulCase{"N67_C129_OC33", 67, 129, 33, true, true}),
                         CaseName());

// ---- layernorm --------------------------------------------------------------------------------------------

struct LayernormCase {
  std::string name;
  int64_t N, C;
  double offset;  // added to every input: rows with a large mean must not lose the variance
};

constexpr float kLayernormEps = 1e-5f;

class LayernormForward : public KernelTest<LayernormCase> {};

TEST_P(LayernormForward, MatchesDoubleReference) {
  const LayernormCase& c = GetParam();
  Floats inp = rng_.normal(c.N * c.C, 1, c.offset);
  Floats weight = rng_.normal(c.C, 0.2, 1);
  Floats bias = rng_.normal(c.C, 0.2);
  DeviceTensor inp_t = upload(backend_, inp, {c.N, c.C});
  DeviceTensor weight_t = upload(backend_, weight, {c.C});
  DeviceTensor bias_t = upload(backend_, bias, {c.C});
  DeviceTensor out_t = poisoned(backend_, {c.N, c.C});
  DeviceTensor mean_t = poisoned(backend_, {c.N});
  DeviceTensor rstd_t = poisoned(backend_, {c.N});

  backend_.layernorm_forward(out_t.tensor, mean_t.tensor, rstd_t.tensor, inp_t.tensor, weight_t.tensor, bias_t.tensor,
                             kLayernormEps);

  Doubles mean(c.N), rstd(c.N);
  Doubles want =
      layernorm_reference(to_doubles(inp), to_doubles(weight), to_doubles(bias), kLayernormEps, c.N, c.C, &mean, &rstd);
  // A two-pass fp32 kernel rounds the mean by ~1e-7 * offset, which shifts every deviation x - mean by as much;
  // out and rstd inherit that error and nothing larger (a one-pass E[x^2] - mean^2 would not fit).
  const Tolerance tolerance{1e-5, 1e-6 * (1 + c.offset)};
  EXPECT_TRUE(all_close(download(backend_, out_t.tensor), want, tolerance)) << "out";
  EXPECT_TRUE(all_close(download(backend_, mean_t.tensor), mean, {1e-6, 1e-6})) << "mean";
  EXPECT_TRUE(all_close(download(backend_, rstd_t.tensor), rstd, {1e-6 * (1 + c.offset), 0})) << "rstd";
}

INSTANTIATE_TEST_SUITE_P(Cpu, LayernormForward,
                         ::testing::Values(LayernormCase{"N1_C1", 1, 1, 0}, LayernormCase{"N1_C3", 1, 3, 0},
                                           LayernormCase{"N7_C5", 7, 5, 0}, LayernormCase{"N3_C768", 3, 768, 0},
                                           LayernormCase{"N5_C64_Offset100", 5, 64, 100},
                                           LayernormCase{"N256_C768", 256, 768, 0}),
                         CaseName());

// d_inp, d_weight and d_bias all accumulate. mean and rstd come from the double reference so that this test
// does not depend on the forward kernel.
class LayernormBackward : public KernelTest<LayernormCase> {};

TEST_P(LayernormBackward, MatchesFiniteDifferences) {
  const LayernormCase& c = GetParam();
  Floats inp = rng_.normal(c.N * c.C, 1, c.offset);
  Floats weight = rng_.normal(c.C, 0.2, 1);
  Floats bias = rng_.normal(c.C, 0.2);
  Floats d_out = rng_.normal(c.N * c.C);
  Floats d_inp_prefill = rng_.normal(c.N * c.C);
  Floats d_weight_prefill = rng_.normal(c.C);
  Floats d_bias_prefill = rng_.normal(c.C);
  const Doubles x = to_doubles(inp), w = to_doubles(weight), b = to_doubles(bias), r = to_doubles(d_out);
  Doubles mean(c.N), rstd(c.N);
  layernorm_reference(x, w, b, kLayernormEps, c.N, c.C, &mean, &rstd);

  DeviceTensor inp_t = upload(backend_, inp, {c.N, c.C});
  DeviceTensor weight_t = upload(backend_, weight, {c.C});
  DeviceTensor mean_t = upload(backend_, to_floats(mean), {c.N});
  DeviceTensor rstd_t = upload(backend_, to_floats(rstd), {c.N});
  DeviceTensor d_out_t = upload(backend_, d_out, {c.N, c.C});
  DeviceTensor d_inp_t = upload(backend_, d_inp_prefill, {c.N, c.C});
  DeviceTensor d_weight_t = upload(backend_, d_weight_prefill, {c.C});
  DeviceTensor d_bias_t = upload(backend_, d_bias_prefill, {c.C});

  backend_.layernorm_backward(d_inp_t.tensor, d_weight_t.tensor, d_bias_t.tensor, d_out_t.tensor, inp_t.tensor,
                              weight_t.tensor, mean_t.tensor, rstd_t.tensor);

  auto loss = [&](const Doubles& x_, const Doubles& w_, const Doubles& b_) {
    return dot(layernorm_reference(x_, w_, b_, kLayernormEps, c.N, c.C), r);
  };
  // d_weight and d_bias are sums over N rows; d_inp subtracts two row means of O(1) terms.
  const Tolerance tolerance{1e-5, 1e-5 * (1 + c.offset)};
  Doubles want_d_inp = numeric_gradient([&](const Doubles& v) { return loss(v, w, b); }, x);
  Doubles want_d_weight = numeric_gradient([&](const Doubles& v) { return loss(x, v, b); }, w);
  Doubles want_d_bias = numeric_gradient([&](const Doubles& v) { return loss(x, w, v); }, b);
  EXPECT_TRUE(all_close(download(backend_, d_inp_t.tensor), plus(d_inp_prefill, want_d_inp), tolerance)) << "d_inp";
  EXPECT_TRUE(all_close(download(backend_, d_weight_t.tensor), plus(d_weight_prefill, want_d_weight), tolerance))
      << "d_weight";
  EXPECT_TRUE(all_close(download(backend_, d_bias_t.tensor), plus(d_bias_prefill, want_d_bias), tolerance)) << "d_bias";
}

INSTANTIATE_TEST_SUITE_P(Cpu, LayernormBackward,
                         ::testing::Values(LayernormCase{"N1_C1", 1, 1, 0}, LayernormCase{"N1_C3", 1, 3, 0},
                                           LayernormCase{"N2_C3", 2, 3, 0}, LayernormCase{"N7_C5", 7, 5, 0},
                                           LayernormCase{"N4_C16_Offset10", 4, 16, 10},
                                           LayernormCase{"N3_C768", 3, 768, 0}),
                         CaseName());

// ---- rmsnorm ----------------------------------------------------------------------------------------------

// Per row of [N,C]: rstd = 1/sqrt(mean(x^2) + eps), out = x * rstd * weight.
Doubles rmsnorm_reference(const Doubles& inp, const Doubles& weight, double eps, int64_t N, int64_t C,
                          Doubles* rstd_out = nullptr) {
  Doubles out(N * C);
  for (int64_t n = 0; n < N; ++n) {
    const double* x = &inp[n * C];
    double mean_square = 0;
    for (int64_t c = 0; c < C; ++c) mean_square += x[c] * x[c];
    mean_square /= static_cast<double>(C);
    const double rstd = 1 / std::sqrt(mean_square + eps);
    for (int64_t c = 0; c < C; ++c) out[n * C + c] = x[c] * rstd * weight[c];
    if (rstd_out != nullptr) (*rstd_out)[n] = rstd;
  }
  return out;
}

struct RmsnormCase {
  std::string name;
  int64_t N, C;
  double scale;  // standard deviation of the inputs: the norm must not depend on it
};

constexpr float kRmsnormEps = 1e-5f;

class RmsnormForward : public KernelTest<RmsnormCase> {};

TEST_P(RmsnormForward, MatchesDoubleReference) {
  const RmsnormCase& c = GetParam();
  Floats inp = rng_.normal(c.N * c.C, c.scale);
  Floats weight = rng_.normal(c.C, 0.2, 1);
  DeviceTensor inp_t = upload(backend_, inp, {c.N, c.C});
  DeviceTensor weight_t = upload(backend_, weight, {c.C});
  DeviceTensor out_t = poisoned(backend_, {c.N, c.C});
  DeviceTensor rstd_t = poisoned(backend_, {c.N});

  backend_.rmsnorm_forward(out_t.tensor, rstd_t.tensor, inp_t.tensor, weight_t.tensor, kRmsnormEps);

  Doubles rstd(c.N);
  Doubles want = rmsnorm_reference(to_doubles(inp), to_doubles(weight), kRmsnormEps, c.N, c.C, &rstd);
  // out = x * rstd * weight: two fp32 products of rstd, itself rounded once from double.
  EXPECT_TRUE(all_close(download(backend_, out_t.tensor), want, {1e-6, 1e-7})) << "out";
  EXPECT_TRUE(all_close(download(backend_, rstd_t.tensor), rstd, {1e-7, 0})) << "rstd";
}

INSTANTIATE_TEST_SUITE_P(Cpu, RmsnormForward,
                         ::testing::Values(RmsnormCase{"N1_C1", 1, 1, 1}, RmsnormCase{"N1_C3", 1, 3, 1},
                                           RmsnormCase{"N7_C5", 7, 5, 1}, RmsnormCase{"N3_C768", 3, 768, 1},
                                           RmsnormCase{"N5_C64_Scale100", 5, 64, 100},
                                           RmsnormCase{"N4_C33_ScaleOneThousandth", 4, 33, 1e-3},
                                           RmsnormCase{"N256_C2048", 256, 2048, 1}),
                         CaseName());

// d_inp and d_weight accumulate. rstd comes from the double reference so that this test does not depend on the
// forward kernel.
class RmsnormBackward : public KernelTest<RmsnormCase> {};

TEST_P(RmsnormBackward, MatchesFiniteDifferences) {
  const RmsnormCase& c = GetParam();
  Floats inp = rng_.normal(c.N * c.C, c.scale);
  Floats weight = rng_.normal(c.C, 0.2, 1);
  Floats d_out = rng_.normal(c.N * c.C);
  Floats d_inp_prefill = rng_.normal(c.N * c.C);
  Floats d_weight_prefill = rng_.normal(c.C);
  const Doubles x = to_doubles(inp), w = to_doubles(weight), r = to_doubles(d_out);
  Doubles rstd(c.N);
  rmsnorm_reference(x, w, kRmsnormEps, c.N, c.C, &rstd);

  DeviceTensor inp_t = upload(backend_, inp, {c.N, c.C});
  DeviceTensor weight_t = upload(backend_, weight, {c.C});
  DeviceTensor rstd_t = upload(backend_, to_floats(rstd), {c.N});
  DeviceTensor d_out_t = upload(backend_, d_out, {c.N, c.C});
  DeviceTensor d_inp_t = upload(backend_, d_inp_prefill, {c.N, c.C});
  DeviceTensor d_weight_t = upload(backend_, d_weight_prefill, {c.C});

  backend_.rmsnorm_backward(d_inp_t.tensor, d_weight_t.tensor, d_out_t.tensor, inp_t.tensor, weight_t.tensor,
                            rstd_t.tensor);

  auto loss = [&](const Doubles& x_, const Doubles& w_) {
    return dot(rmsnorm_reference(x_, w_, kRmsnormEps, c.N, c.C), r);
  };
  // d_inp is O(rstd) = O(1/scale); d_weight sums N rows of O(1) terms.
  const Tolerance d_inp_tolerance{1e-5, 1e-5 / c.scale};
  const Tolerance d_weight_tolerance{1e-5, 1e-5};
  Doubles want_d_inp = numeric_gradient([&](const Doubles& v) { return loss(v, w); }, x);
  Doubles want_d_weight = numeric_gradient([&](const Doubles& v) { return loss(x, v); }, w);
  EXPECT_TRUE(all_close(download(backend_, d_inp_t.tensor), plus(d_inp_prefill, want_d_inp), d_inp_tolerance))
      << "d_inp";
  EXPECT_TRUE(
      all_close(download(backend_, d_weight_t.tensor), plus(d_weight_prefill, want_d_weight), d_weight_tolerance))
      << "d_weight";
}

INSTANTIATE_TEST_SUITE_P(Cpu, RmsnormBackward,
                         ::testing::Values(RmsnormCase{"N1_C1", 1, 1, 1}, RmsnormCase{"N1_C3", 1, 3, 1},
                                           RmsnormCase{"N2_C3", 2, 3, 1}, RmsnormCase{"N7_C5", 7, 5, 1},
                                           RmsnormCase{"N4_C16_Scale10", 4, 16, 10}, RmsnormCase{"N3_C768", 3, 768, 1}),
                         CaseName());

// residual_out = a + b is one fp32 addition (exact: (float)(a + b)); out and rstd are rmsnorm_forward of it. The
// residual may be updated in place (residual_out aliasing a).
class ResidualRmsnormForward : public KernelTest<RmsnormCase> {};

TEST_P(ResidualRmsnormForward, AddsThenNormalizes) {
  const RmsnormCase& c = GetParam();
  Floats a = rng_.normal(c.N * c.C, c.scale), b = rng_.normal(c.N * c.C, c.scale);
  Floats weight = rng_.normal(c.C, 0.2, 1);
  Floats sum(c.N * c.C);
  for (int64_t i = 0; i < c.N * c.C; ++i) sum[i] = a[i] + b[i];
  Doubles rstd(c.N);
  const Doubles want = rmsnorm_reference(to_doubles(sum), to_doubles(weight), kRmsnormEps, c.N, c.C, &rstd);
  DeviceTensor weight_t = upload(backend_, weight, {c.C});
  for (const bool in_place : {false, true}) {
    DeviceTensor a_t = upload(backend_, a, {c.N, c.C});
    DeviceTensor b_t = upload(backend_, b, {c.N, c.C});
    DeviceTensor residual_t = in_place ? DeviceTensor{} : poisoned(backend_, {c.N, c.C});
    const Tensor residual = in_place ? a_t.tensor : residual_t.tensor;
    DeviceTensor out_t = poisoned(backend_, {c.N, c.C});
    DeviceTensor rstd_t = poisoned(backend_, {c.N});
    backend_.residual_rmsnorm_forward(residual, out_t.tensor, rstd_t.tensor, a_t.tensor, b_t.tensor, weight_t.tensor,
                                      kRmsnormEps);
    EXPECT_TRUE(all_close(download(backend_, residual), to_doubles(sum), kExact)) << "residual, in place " << in_place;
    EXPECT_TRUE(all_close(download(backend_, out_t.tensor), want, {1e-6, 1e-7})) << "out, in place " << in_place;
    EXPECT_TRUE(all_close(download(backend_, rstd_t.tensor), rstd, {1e-7, 0})) << "rstd, in place " << in_place;
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, ResidualRmsnormForward,
                         ::testing::Values(RmsnormCase{"N1_C1", 1, 1, 1}, RmsnormCase{"N7_C5", 7, 5, 1},
                                           RmsnormCase{"N9_C768", 9, 768, 3}),
                         CaseName());

// ---- rope -------------------------------------------------------------------------------------------------

struct RopeCase {
  std::string name;
  int64_t B, T, H, KV, hs;  // rows N = B*T of qkv[N, (H + 2*KV)*hs], seq_len = T
  float theta;
};

int64_t rope_width(const RopeCase& c) { return (c.H + 2 * c.KV) * c.hs; }

// The angle of pair d at `position` as the contract (core/backend.h) defines it: position * theta^(-2d/hs) in
// double.
double rope_contract_angle(int64_t position, int64_t d, int64_t hs, float theta) {
  return static_cast<double>(position) *
         (1.0 / std::pow(static_cast<double>(theta), static_cast<double>(2 * d) / static_cast<double>(hs)));
}

// The rotate-half rotation of the Q and K heads of qkv[N, W] in double, by +angle (or -angle: `inverse`), with the
// contract's angle, or with the same angle written as position * theta^(-2d/hs) when `exact_angle`. V is copied.
Doubles rope_reference(const Doubles& qkv, const RopeCase& c, bool inverse, bool exact_angle = false,
                       int64_t first_position = 0) {
  const int64_t W = rope_width(c), half = c.hs / 2, N = c.B * c.T;
  Doubles out = qkv;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t position = first_position + i % c.T;
    for (int64_t d = 0; d < half; ++d) {
      const double angle = exact_angle
                               ? static_cast<double>(position) * std::pow(static_cast<double>(c.theta), -2.0 * d / c.hs)
                               : rope_contract_angle(position, d, c.hs, c.theta);
      const double cosine = std::cos(angle), sine = inverse ? -std::sin(angle) : std::sin(angle);
      for (int64_t head = 0; head < c.H + c.KV; ++head) {
        const int64_t x = i * W + head * c.hs + d, y = x + half;
        out[x] = qkv[x] * cosine - qkv[y] * sine;
        out[y] = qkv[y] * cosine + qkv[x] * sine;
      }
    }
  }
  return out;
}

class Rope : public KernelTest<RopeCase> {};

TEST_P(Rope, ForwardMatchesDoubleReference) {
  const RopeCase& c = GetParam();
  const int64_t W = rope_width(c), N = c.B * c.T;
  Floats qkv = rng_.normal(N * W);
  DeviceTensor qkv_t = upload(backend_, qkv, {c.B, c.T, W});

  backend_.rope_forward(qkv_t.tensor, static_cast<int>(c.H), static_cast<int>(c.KV), static_cast<int>(c.T), c.theta);

  const Floats got = download(backend_, qkv_t.tensor);
  // The contract's angle: only the rounding of cos, sin (to f32) and of the two products and their sum.
  EXPECT_TRUE(all_close(got, rope_reference(to_doubles(qkv), c, false), {1e-6, 1e-6})) << "contract angle";
  // The same angle by another formula: the doubles differ in their last bits only.
  EXPECT_TRUE(all_close(got, rope_reference(to_doubles(qkv), c, false, true), {1e-6, 1e-6})) << "exact angle";
  // V is untouched, bit for bit.
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t x = (c.H + c.KV) * c.hs; x < W; ++x) ASSERT_EQ(got[i * W + x], qkv[i * W + x]) << "V row " << i;
  }
}

// rope_forward_at: the same rotation at positions shifted by an offset (new tokens after cached ones); at offset 0
// it is rope_forward, bit for bit.
TEST_P(Rope, ForwardAtAnOffsetMatchesDoubleReference) {
  const RopeCase& c = GetParam();
  const int64_t W = rope_width(c), N = c.B * c.T;
  const int H = static_cast<int>(c.H), KV = static_cast<int>(c.KV), T = static_cast<int>(c.T);
  for (const int position : {0, 1, 37, 4093}) {
    Floats qkv = rng_.normal(N * W);
    DeviceTensor qkv_t = upload(backend_, qkv, {c.B, c.T, W});
    backend_.rope_forward_at(qkv_t.tensor, H, KV, T, position, c.theta);
    const Floats got = download(backend_, qkv_t.tensor);
    EXPECT_TRUE(all_close(got, rope_reference(to_doubles(qkv), c, false, false, position), {1e-6, 1e-6}))
        << "position " << position;
    if (position == 0) {
      DeviceTensor plain_t = upload(backend_, qkv, {c.B, c.T, W});
      backend_.rope_forward(plain_t.tensor, H, KV, T, c.theta);
      EXPECT_EQ(download(backend_, plain_t.tensor), got) << "offset 0 is rope_forward";
    }
  }
}

// rope_backward is the adjoint of rope_forward: <fwd(x), y> = <x, bwd(y)>, to rounding; and, the rotation being
// orthogonal, also its inverse: bwd(fwd(x)) = x.
TEST_P(Rope, BackwardIsTheAdjointAndTheInverse) {
  const RopeCase& c = GetParam();
  const int64_t W = rope_width(c), n = c.B * c.T * W;
  const int H = static_cast<int>(c.H), KV = static_cast<int>(c.KV), T = static_cast<int>(c.T);
  Floats x = rng_.normal(n), y = rng_.normal(n);
  DeviceTensor x_t = upload(backend_, x, {c.B, c.T, W});
  DeviceTensor y_t = upload(backend_, y, {c.B, c.T, W});
  backend_.rope_forward(x_t.tensor, H, KV, T, c.theta);
  backend_.rope_backward(y_t.tensor, H, KV, T, c.theta);
  const double forward_dot = dot(to_doubles(download(backend_, x_t.tensor)), to_doubles(y));
  const double backward_dot = dot(to_doubles(x), to_doubles(download(backend_, y_t.tensor)));
  // Each rotated value is off by a few fp32 roundings (~2e-7 relative); n such errors of random sign.
  EXPECT_NEAR(forward_dot, backward_dot, 1e-6 * std::sqrt(static_cast<double>(n)));

  backend_.rope_backward(x_t.tensor, H, KV, T, c.theta);
  EXPECT_TRUE(all_close(download(backend_, x_t.tensor), to_doubles(x), {1e-6, 1e-6})) << "bwd(fwd(x))";
}

// The gradient of L = <rope(x), R> is rope_backward(R), computed in place. Small shapes only (finite differences).
class RopeBackward : public KernelTest<RopeCase> {};

TEST_P(RopeBackward, MatchesFiniteDifferences) {
  const RopeCase& c = GetParam();
  const int64_t W = rope_width(c), n = c.B * c.T * W;
  Floats x = rng_.normal(n), r = rng_.normal(n);
  DeviceTensor d_qkv_t = upload(backend_, r, {c.B, c.T, W});
  backend_.rope_backward(d_qkv_t.tensor, static_cast<int>(c.H), static_cast<int>(c.KV), static_cast<int>(c.T), c.theta);
  const Doubles rd = to_doubles(r);
  Doubles want =
      numeric_gradient([&](const Doubles& v) { return dot(rope_reference(v, c, false), rd); }, to_doubles(x));
  EXPECT_TRUE(all_close(download(backend_, d_qkv_t.tensor), want, {1e-6, 1e-6}));
}

INSTANTIATE_TEST_SUITE_P(Cpu, Rope,
                         ::testing::Values(RopeCase{"B1_T1_H1_KV1_hs2", 1, 1, 1, 1, 2, 10000.0f},
                                           RopeCase{"B2_T7_H3_KV1_hs6", 2, 7, 3, 1, 6, 10000.0f},
                                           RopeCase{"B2_T9_H4_KV2_hs10", 2, 9, 4, 2, 10, 10000.0f},
                                           RopeCase{"B3_T5_H2_KV2_hs4_Theta500000", 3, 5, 2, 2, 4, 500000.0f},
                                           RopeCase{"B2_T32_H4_KV2_hs64", 2, 32, 4, 2, 64, 10000.0f},
                                           RopeCase{"B1_T2048_H2_KV1_hs128_Theta500000", 1, 2048, 2, 1, 128,
                                                    500000.0f}),
                         CaseName());
INSTANTIATE_TEST_SUITE_P(Cpu, RopeBackward,
                         ::testing::Values(RopeCase{"B1_T1_H1_KV1_hs2", 1, 1, 1, 1, 2, 10000.0f},
                                           RopeCase{"B2_T7_H3_KV1_hs6", 2, 7, 3, 1, 6, 10000.0f},
                                           RopeCase{"B2_T9_H4_KV2_hs10", 2, 9, 4, 2, 10, 10000.0f},
                                           RopeCase{"B3_T5_H2_KV2_hs4_Theta500000", 3, 5, 2, 2, 4, 500000.0f}),
                         CaseName());

// ---- swiglu -----------------------------------------------------------------------------------------------

// out[N,F] = silu(g) * u, g and u the two halves of each row of gate_up[N,2F].
Doubles swiglu_reference(const Doubles& gate_up, int64_t N, int64_t F) {
  Doubles out(N * F);
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t j = 0; j < F; ++j) {
      const double g = gate_up[i * 2 * F + j], u = gate_up[i * 2 * F + F + j];
      out[i * F + j] = g / (1 + std::exp(-g)) * u;
    }
  }
  return out;
}

struct SwigluCase {
  std::string name;
  int64_t N, F;
};

// Gates span both tails of the sigmoid, and a few saturate it completely.
Floats swiglu_inputs(Rng& rng, int64_t N, int64_t F) {
  Floats gate_up = rng.uniform(N * 2 * F, -8, 8);
  const float tails[] = {-100.0f, -30.0f, 30.0f, 100.0f};
  for (int64_t k = 0; k < 4 && k < F; ++k) gate_up[k] = tails[k];
  return gate_up;
}

class SwigluForward : public KernelTest<SwigluCase> {};

TEST_P(SwigluForward, MatchesDoubleReference) {
  const SwigluCase& c = GetParam();
  Floats gate_up = swiglu_inputs(rng_, c.N, c.F);
  DeviceTensor gate_up_t = upload(backend_, gate_up, {c.N, 2 * c.F});
  DeviceTensor out_t = poisoned(backend_, {c.N, c.F});
  backend_.swiglu_forward(out_t.tensor, gate_up_t.tensor);
  EXPECT_TRUE(
      all_close(download(backend_, out_t.tensor), swiglu_reference(to_doubles(gate_up), c.N, c.F), {1e-6, 1e-7}));
}

INSTANTIATE_TEST_SUITE_P(Cpu, SwigluForward,
                         ::testing::Values(SwigluCase{"N1_F1", 1, 1}, SwigluCase{"N3_F7", 3, 7},
                                           SwigluCase{"N5_F129", 5, 129}, SwigluCase{"N64_F1000", 64, 1000}),
                         CaseName());

// d_gate_up overwrites: both halves against finite differences of <swiglu(gate_up), R>.
class SwigluBackward : public KernelTest<SwigluCase> {};

TEST_P(SwigluBackward, MatchesFiniteDifferences) {
  const SwigluCase& c = GetParam();
  Floats gate_up = swiglu_inputs(rng_, c.N, c.F);
  Floats d_out = rng_.normal(c.N * c.F);
  DeviceTensor gate_up_t = upload(backend_, gate_up, {c.N, 2 * c.F});
  DeviceTensor d_out_t = upload(backend_, d_out, {c.N, c.F});
  DeviceTensor d_gate_up_t = poisoned(backend_, {c.N, 2 * c.F});
  backend_.swiglu_backward(d_gate_up_t.tensor, d_out_t.tensor, gate_up_t.tensor);
  const Doubles r = to_doubles(d_out);
  Doubles want =
      numeric_gradient([&](const Doubles& v) { return dot(swiglu_reference(v, c.N, c.F), r); }, to_doubles(gate_up));
  EXPECT_TRUE(all_close(download(backend_, d_gate_up_t.tensor), want, {1e-5, 1e-6}));
}

INSTANTIATE_TEST_SUITE_P(Cpu, SwigluBackward,
                         ::testing::Values(SwigluCase{"N1_F1", 1, 1}, SwigluCase{"N3_F7", 3, 7},
                                           SwigluCase{"N5_F33", 5, 33}),
                         CaseName());

// ---- elementwise ops: gelu, add, scale, fill, copy, sum_of_squares ------------------------------------------

struct ElementwiseCase {
  std::string name;
  int64_t n;
};

const auto kElementwiseCases = ::testing::Values(ElementwiseCase{"N1", 1}, ElementwiseCase{"N7", 7},
                                                 ElementwiseCase{"N4099", 4099}, ElementwiseCase{"N1000003", 1000003});
// Finite differences of an elementwise op over n inputs cost n^2 evaluations.
const auto kSmallElementwiseCases =
    ::testing::Values(ElementwiseCase{"N1", 1}, ElementwiseCase{"N7", 7}, ElementwiseCase{"N1001", 1001});

// GELU inputs span both tails.
constexpr double kGeluRange = 6;

class GeluForward : public KernelTest<ElementwiseCase> {};

TEST_P(GeluForward, MatchesDoubleReference) {
  const int64_t n = GetParam().n;
  Floats inp = rng_.uniform(n, -kGeluRange, kGeluRange);
  DeviceTensor inp_t = upload(backend_, inp, {n});
  DeviceTensor out_t = poisoned(backend_, {n});
  backend_.gelu_forward(out_t.tensor, inp_t.tensor);
  EXPECT_TRUE(all_close(download(backend_, out_t.tensor), gelu_reference(to_doubles(inp)), {1e-5, 1e-6}));
}

INSTANTIATE_TEST_SUITE_P(Cpu, GeluForward, kElementwiseCases, CaseName());

// d_inp overwrites, once into its own tensor and once aliasing d_out (allowed by the contract).
class GeluBackward : public KernelTest<ElementwiseCase> {};

TEST_P(GeluBackward, MatchesFiniteDifferences) {
  const int64_t n = GetParam().n;
  Floats inp = rng_.uniform(n, -kGeluRange, kGeluRange);
  Floats d_out = rng_.normal(n);
  const Doubles r = to_doubles(d_out);
  Doubles want = numeric_gradient([&](const Doubles& v) { return dot(gelu_reference(v), r); }, to_doubles(inp));
  // In the tails gelu' is a difference of terms of size ~|x| (1 - tanh^2 cancels in fp32), so its error is
  // absolute: ~1e-6 at |x| ~ 4.
  const Tolerance tolerance{1e-5, 1e-5};

  DeviceTensor inp_t = upload(backend_, inp, {n});
  DeviceTensor d_out_t = upload(backend_, d_out, {n});
  DeviceTensor d_inp_t = poisoned(backend_, {n});
  backend_.gelu_backward(d_inp_t.tensor, inp_t.tensor, d_out_t.tensor);
  EXPECT_TRUE(all_close(download(backend_, d_inp_t.tensor), want, tolerance)) << "separate d_inp";

  backend_.gelu_backward(d_out_t.tensor, inp_t.tensor, d_out_t.tensor);
  EXPECT_TRUE(all_close(download(backend_, d_out_t.tensor), want, tolerance)) << "d_inp aliasing d_out";
}

INSTANTIATE_TEST_SUITE_P(Cpu, GeluBackward, kSmallElementwiseCases, CaseName());

// out = a + b is one correctly rounded fp32 addition, so the result is exact: (float)((double)a + (double)b).
class Add : public KernelTest<ElementwiseCase> {};

TEST_P(Add, IsExactIncludingAliasedOutput) {
  const int64_t n = GetParam().n;
  Floats a = rng_.normal(n), b = rng_.normal(n, 100);
  Doubles want(n);
  for (int64_t i = 0; i < n; ++i) want[i] = static_cast<float>(static_cast<double>(a[i]) + b[i]);

  DeviceTensor a_t = upload(backend_, a, {n});
  DeviceTensor b_t = upload(backend_, b, {n});
  DeviceTensor out_t = poisoned(backend_, {n});
  backend_.add(out_t.tensor, a_t.tensor, b_t.tensor);
  EXPECT_TRUE(all_close(download(backend_, out_t.tensor), want, kExact)) << "separate out";

  backend_.add(a_t.tensor, a_t.tensor, b_t.tensor);
  EXPECT_TRUE(all_close(download(backend_, a_t.tensor), want, kExact)) << "out aliasing a";

  DeviceTensor a2_t = upload(backend_, a, {n});
  backend_.add(b_t.tensor, a2_t.tensor, b_t.tensor);
  EXPECT_TRUE(all_close(download(backend_, b_t.tensor), want, kExact)) << "out aliasing b";
}

INSTANTIATE_TEST_SUITE_P(Cpu, Add, kElementwiseCases, CaseName());

// t *= factor is one fp32 multiplication per element: exact.
class Scale : public KernelTest<ElementwiseCase> {};

TEST_P(Scale, IsExact) {
  const int64_t n = GetParam().n;
  Floats values = rng_.normal(n);
  for (float factor : {0.5f, -3.0f, 0.0f, 1e-3f}) {
    DeviceTensor t = upload(backend_, values, {n});
    backend_.scale(t.tensor, factor);
    Doubles want(n);
    for (int64_t i = 0; i < n; ++i) want[i] = values[i] * factor;
    EXPECT_TRUE(all_close(download(backend_, t.tensor), want, kExact)) << "factor " << factor;
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, Scale, kElementwiseCases, CaseName());

class Fill : public KernelTest<ElementwiseCase> {};

TEST_P(Fill, WritesEveryElement) {
  const int64_t n = GetParam().n;
  for (float value : {0.0f, -1.5f, 3e38f}) {
    DeviceTensor t = poisoned(backend_, {n});
    backend_.fill(t.tensor, value);
    EXPECT_TRUE(all_close(download(backend_, t.tensor), Doubles(n, value), kExact)) << "f32 value " << value;
  }
  for (int32_t value : {0, 7, -3}) {
    DeviceTensor t = upload(backend_, Ints(n, 12345), {n});
    backend_.fill(t.tensor, static_cast<float>(value));
    Ints got(n);
    backend_.copy_to_host(got.data(), t.tensor);
    EXPECT_EQ(std::count(got.begin(), got.end(), value), n) << "i32 value " << value;
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, Fill, kElementwiseCases, CaseName());

// copy_from_host, copy (between tensors of the same byte size, here of different shapes) and copy_to_host
// move bits unchanged.
class Copy : public KernelTest<ElementwiseCase> {};

TEST_P(Copy, RoundTripsBitsUnchanged) {
  const int64_t n = GetParam().n;
  Floats values = rng_.normal(n);
  values[0] = -0.0f;
  DeviceTensor src = upload(backend_, values, {n});
  DeviceTensor dst = poisoned(backend_, {1, n});
  backend_.copy(dst.tensor, src.tensor);
  Floats got = download(backend_, dst.tensor);
  EXPECT_TRUE(all_close(got, to_doubles(values), kExact));
  EXPECT_TRUE(std::signbit(got[0])) << "-0 must stay -0";

  Ints tokens(n);
  std::iota(tokens.begin(), tokens.end(), -3);
  DeviceTensor tokens_t = upload(backend_, tokens, {n});
  Ints tokens_back(n, 0);
  backend_.copy_to_host(tokens_back.data(), tokens_t.tensor);
  EXPECT_EQ(tokens_back, tokens);
}

INSTANTIATE_TEST_SUITE_P(Cpu, Copy, kElementwiseCases, CaseName());

// The squares of fp32 values are exact in double, and the contract accumulates in double: the result may
// differ from the double reference by little more than double rounding. fp32 accumulation would be off by
// ~1e-6 relative from a few thousand elements on.
class SumOfSquares : public KernelTest<ElementwiseCase> {};

TEST_P(SumOfSquares, MatchesDoubleSum) {
  const int64_t n = GetParam().n;
  Floats values = rng_.normal(n, 3);
  double want = 0;
  for (float x : values) want += static_cast<double>(x) * x;
  DeviceTensor t = upload(backend_, values, {n});
  double got = backend_.sum_of_squares(t.tensor);
  EXPECT_NEAR(got, want, 1e-12 * want);
}

INSTANTIATE_TEST_SUITE_P(Cpu, SumOfSquares, kElementwiseCases, CaseName());

// ---- attention --------------------------------------------------------------------------------------------

struct AttentionCase {
  std::string name;
  int64_t B, T, H, KV, hs;  // KV key/value heads; KV == H is multi-head attention
};

int64_t qkv_width(const AttentionCase& c) { return (c.H + 2 * c.KV) * c.hs; }

class AttentionForward : public KernelTest<AttentionCase> {};

TEST_P(AttentionForward, MatchesDoubleReference) {
  const AttentionCase& c = GetParam();
  const int64_t C = c.H * c.hs, W = qkv_width(c);
  Floats qkv = rng_.normal(c.B * c.T * W, 1.5);
  DeviceTensor qkv_t = upload(backend_, qkv, {c.B, c.T, W});
  DeviceTensor out_t = poisoned(backend_, {c.B, c.T, C});
  DeviceTensor lse_t = poisoned(backend_, {c.B, c.H, c.T});

  backend_.attention_forward(out_t.tensor, lse_t.tensor, qkv_t.tensor, static_cast<int>(c.H), static_cast<int>(c.KV));

  Doubles lse;
  Doubles want = attention_reference(to_doubles(qkv), c.B, c.T, c.H, c.KV, c.hs, &lse);
  EXPECT_TRUE(all_close(download(backend_, out_t.tensor), want, {1e-5, 1e-5})) << "out";
  EXPECT_TRUE(all_close(download(backend_, lse_t.tensor), lse, {1e-5, 1e-6})) << "lse";
}

INSTANTIATE_TEST_SUITE_P(
    Cpu, AttentionForward,
    ::testing::Values(
        AttentionCase{"B1_T1_H1_hs1", 1, 1, 1, 1, 1}, AttentionCase{"B1_T7_H1_hs5", 1, 7, 1, 1, 5},
        AttentionCase{"B2_T7_H3_hs5", 2, 7, 3, 3, 5}, AttentionCase{"B3_T1_H2_hs4", 3, 1, 2, 2, 4},
        AttentionCase{"B2_T16_H4_hs8", 2, 16, 4, 4, 8}, AttentionCase{"B2_T64_H12_hs64", 2, 64, 12, 12, 64},
        // Grouped-query: one key/value head for all (multi-query), two groups, odd T and head sizes.
        AttentionCase{"B2_T7_H3_KV1_hs5", 2, 7, 3, 1, 5}, AttentionCase{"B2_T9_H4_KV2_hs6", 2, 9, 4, 2, 6},
        AttentionCase{"B1_T13_H6_KV2_hs4", 1, 13, 6, 2, 4}, AttentionCase{"B2_T33_H8_KV2_hs16", 2, 33, 8, 2, 16},
        AttentionCase{"B1_T64_H32_KV8_hs64", 1, 64, 32, 8, 64}),
    CaseName());

// Cached attention: a sequence of P + Tq tokens, the first P of them already in the caches (and the cache rows
// after P + Tq poisoned), the last Tq new. Its output must be the last Tq rows of causal attention over the whole
// sequence (the double reference), and the caches must then hold every token's K and V.
struct CachedAttentionCase {
  std::string name;
  int64_t B, P, Tq, T_cache, H, KV, hs;
};

class CachedAttention : public KernelTest<CachedAttentionCase> {};

TEST_P(CachedAttention, MatchesFullAttentionOfTheWholeSequence) {
  const CachedAttentionCase& c = GetParam();
  const int64_t W = (c.H + 2 * c.KV) * c.hs, C = c.H * c.hs, kv = c.KV * c.hs, T = c.P + c.Tq;
  const Floats full = rng_.normal(c.B * T * W, 1.5);
  Floats fresh(static_cast<size_t>(c.B * c.Tq * W)), k_cache(static_cast<size_t>(c.B * c.T_cache * kv), 1e30f),
      v_cache = k_cache;
  for (int64_t b = 0; b < c.B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      const float* row = full.data() + (b * T + t) * W;
      if (t >= c.P) std::copy(row, row + W, fresh.begin() + (b * c.Tq + t - c.P) * W);
      if (t < c.P) {
        std::copy(row + C, row + C + kv, k_cache.begin() + (b * c.T_cache + t) * kv);
        std::copy(row + C + kv, row + C + 2 * kv, v_cache.begin() + (b * c.T_cache + t) * kv);
      }
    }
  }
  DeviceTensor qkv_t = upload(backend_, fresh, {c.B, c.Tq, W});
  DeviceTensor k_t = upload(backend_, k_cache, {c.B, c.T_cache, c.KV, c.hs});
  DeviceTensor v_t = upload(backend_, v_cache, {c.B, c.T_cache, c.KV, c.hs});
  DeviceTensor out_t = poisoned(backend_, {c.B, c.Tq, C});

  backend_.cached_attention_forward(out_t.tensor, qkv_t.tensor, k_t.tensor, v_t.tensor, static_cast<int>(c.H),
                                    static_cast<int>(c.KV), static_cast<int>(c.P));

  const Doubles all = attention_reference(to_doubles(full), c.B, T, c.H, c.KV, c.hs);
  Doubles want(static_cast<size_t>(c.B * c.Tq * C));
  for (int64_t b = 0; b < c.B; ++b) {
    std::copy(all.begin() + (b * T + c.P) * C, all.begin() + (b * T + T) * C, want.begin() + b * c.Tq * C);
  }
  EXPECT_TRUE(all_close(download(backend_, out_t.tensor), want, {1e-5, 1e-5})) << "out";
  const Floats k_got = download(backend_, k_t.tensor), v_got = download(backend_, v_t.tensor);
  for (int64_t b = 0; b < c.B; ++b) {
    for (int64_t t = 0; t < c.T_cache; ++t) {
      for (int64_t x = 0; x < kv; ++x) {
        const size_t at = static_cast<size_t>((b * c.T_cache + t) * kv + x);
        const float want_k = t < T ? full[(b * T + t) * W + C + x] : 1e30f;
        const float want_v = t < T ? full[(b * T + t) * W + C + kv + x] : 1e30f;
        ASSERT_EQ(k_got[at], want_k) << "k_cache b " << b << " t " << t;
        ASSERT_EQ(v_got[at], want_v) << "v_cache b " << b << " t " << t;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cpu, CachedAttention,
    ::testing::Values(
        // A prefill (nothing cached), single-token steps, several new tokens over a cache, GQA, odd sizes.
        CachedAttentionCase{"prefill_B1_T7_H2_hs4", 1, 0, 7, 9, 2, 2, 4},
        CachedAttentionCase{"step_B1_P1_H1_hs1", 1, 1, 1, 2, 1, 1, 1},
        CachedAttentionCase{"step_B2_P12_H3_hs5", 2, 12, 1, 16, 3, 3, 5},
        CachedAttentionCase{"chunk_B2_P5_Tq3_H4_KV2_hs6", 2, 5, 3, 11, 4, 2, 6},
        CachedAttentionCase{"step_B1_P40_H6_KV1_hs8", 1, 40, 1, 41, 6, 1, 8},
        CachedAttentionCase{"step_B1_P100_H8_KV2_hs64", 1, 100, 1, 128, 8, 2, 64}),
    CaseName());

// With as many key/value heads as query heads, GQA is multi-head attention: the grouped code path must give
// exactly (bit for bit) what the per-head references of multi-head attention give when each query head's K and V
// are copied out of the shared ones. Checked against the GQA op run on the expanded multi-head qkv.
class AttentionGroupsExpand : public KernelTest<AttentionCase> {};

TEST_P(AttentionGroupsExpand, EqualsMultiHeadAttentionOnRepeatedKeysAndValues) {
  const AttentionCase& c = GetParam();
  const int64_t C = c.H * c.hs, W = qkv_width(c), group = c.H / c.KV;
  Floats qkv = rng_.normal(c.B * c.T * W, 1.5);
  // The multi-head qkv: K and V heads repeated for each query head of their group.
  Floats expanded(c.B * c.T * 3 * C);
  for (int64_t row = 0; row < c.B * c.T; ++row) {
    for (int64_t x = 0; x < C; ++x) expanded[row * 3 * C + x] = qkv[row * W + x];
    for (int64_t h = 0; h < c.H; ++h) {
      for (int64_t d = 0; d < c.hs; ++d) {
        expanded[row * 3 * C + C + h * c.hs + d] = qkv[row * W + C + (h / group) * c.hs + d];
        expanded[row * 3 * C + 2 * C + h * c.hs + d] = qkv[row * W + C + c.KV * c.hs + (h / group) * c.hs + d];
      }
    }
  }
  DeviceTensor qkv_t = upload(backend_, qkv, {c.B, c.T, W});
  DeviceTensor expanded_t = upload(backend_, expanded, {c.B, c.T, 3 * C});
  DeviceTensor out_t = poisoned(backend_, {c.B, c.T, C}), lse_t = poisoned(backend_, {c.B, c.H, c.T});
  DeviceTensor out_mha_t = poisoned(backend_, {c.B, c.T, C}), lse_mha_t = poisoned(backend_, {c.B, c.H, c.T});
  const int H = static_cast<int>(c.H);
  backend_.attention_forward(out_t.tensor, lse_t.tensor, qkv_t.tensor, H, static_cast<int>(c.KV));
  backend_.attention_forward(out_mha_t.tensor, lse_mha_t.tensor, expanded_t.tensor, H, H);
  EXPECT_EQ(download(backend_, out_t.tensor), download(backend_, out_mha_t.tensor));
  EXPECT_EQ(download(backend_, lse_t.tensor), download(backend_, lse_mha_t.tensor));
}

INSTANTIATE_TEST_SUITE_P(Cpu, AttentionGroupsExpand,
                         ::testing::Values(AttentionCase{"B2_T7_H3_KV1_hs5", 2, 7, 3, 1, 5},
                                           AttentionCase{"B2_T33_H8_KV2_hs16", 2, 33, 8, 2, 16}),
                         CaseName());

// d_qkv overwrites. out and lse (what the forward saved) come from the double reference.
class AttentionBackward : public KernelTest<AttentionCase> {};

TEST_P(AttentionBackward, MatchesFiniteDifferences) {
  const AttentionCase& c = GetParam();
  const int64_t C = c.H * c.hs, W = qkv_width(c);
  Floats qkv = rng_.normal(c.B * c.T * W, 1.5);
  Floats d_out = rng_.normal(c.B * c.T * C);
  const Doubles x = to_doubles(qkv), r = to_doubles(d_out);
  Doubles lse;
  const Doubles out = attention_reference(x, c.B, c.T, c.H, c.KV, c.hs, &lse);

  DeviceTensor qkv_t = upload(backend_, qkv, {c.B, c.T, W});
  DeviceTensor out_t = upload(backend_, to_floats(out), {c.B, c.T, C});
  DeviceTensor lse_t = upload(backend_, to_floats(lse), {c.B, c.H, c.T});
  DeviceTensor d_out_t = upload(backend_, d_out, {c.B, c.T, C});
  DeviceTensor d_qkv_t = poisoned(backend_, {c.B, c.T, W});

  backend_.attention_backward(d_qkv_t.tensor, d_out_t.tensor, qkv_t.tensor, out_t.tensor, lse_t.tensor,
                              static_cast<int>(c.H), static_cast<int>(c.KV));

  Doubles want =
      numeric_gradient([&](const Doubles& v) { return dot(attention_reference(v, c.B, c.T, c.H, c.KV, c.hs), r); }, x);
  EXPECT_TRUE(all_close(download(backend_, d_qkv_t.tensor), want, {1e-4, 1e-5})) << "d_qkv";
}

INSTANTIATE_TEST_SUITE_P(Cpu, AttentionBackward,
                         ::testing::Values(AttentionCase{"B1_T1_H1_hs1", 1, 1, 1, 1, 1},
                                           AttentionCase{"B1_T1_H2_hs3", 1, 1, 2, 2, 3},
                                           AttentionCase{"B1_T7_H1_hs5", 1, 7, 1, 1, 5},
                                           AttentionCase{"B2_T7_H3_hs5", 2, 7, 3, 3, 5},
                                           AttentionCase{"B1_T16_H2_hs8", 1, 16, 2, 2, 8},
                                           // Grouped-query: dK and dV sum over each group's query heads.
                                           AttentionCase{"B1_T1_H2_KV1_hs3", 1, 1, 2, 1, 3},
                                           AttentionCase{"B2_T7_H3_KV1_hs5", 2, 7, 3, 1, 5},
                                           AttentionCase{"B1_T9_H4_KV2_hs4", 1, 9, 4, 2, 4},
                                           AttentionCase{"B1_T5_H6_KV3_hs2", 1, 5, 6, 3, 2}),
                         CaseName());

// ---- embedding --------------------------------------------------------------------------------------------

struct EmbeddingCase {
  std::string name;
  int64_t B, T, C;
  int64_t V_local;      // rows of this shard's wte
  int64_t vocab_start;  // first vocabulary entry of the shard
  int32_t V_total;      // tokens are drawn from [0, V_total): outside the shard when vocab_start > 0 or
                        // V_total > vocab_start + V_local
  bool wpe;
};

// Random tokens from [0, V_total), the first ones placed on the shard's edges: just below, first, last, just
// above.
Ints embedding_tokens(Rng& rng, const EmbeddingCase& c) {
  Ints tokens = rng.integers(c.B * c.T, 0, c.V_total - 1);
  const int64_t edges[] = {c.vocab_start - 1, c.vocab_start, c.vocab_start + c.V_local - 1, c.vocab_start + c.V_local};
  size_t next = 0;
  for (int64_t token : edges) {
    if (token >= 0 && token < c.V_total && next < tokens.size()) tokens[next++] = static_cast<int32_t>(token);
  }
  return tokens;
}

// wpe has more rows than seq_len, like a model whose max sequence length exceeds the batch's.
constexpr int64_t kExtraPositions = 3;

class EmbeddingForward : public KernelTest<EmbeddingCase> {};

TEST_P(EmbeddingForward, MatchesDoubleReference) {
  const EmbeddingCase& c = GetParam();
  const int64_t P = c.T + kExtraPositions;
  Ints tokens = embedding_tokens(rng_, c);
  Floats wte = rng_.normal(c.V_local * c.C);
  Floats wpe = c.wpe ? rng_.normal(P * c.C) : Floats();
  DeviceTensor tokens_t = upload(backend_, tokens, {c.B, c.T});
  DeviceTensor wte_t = upload(backend_, wte, {c.V_local, c.C});
  DeviceTensor wpe_t = c.wpe ? upload(backend_, wpe, {P, c.C}) : DeviceTensor{};
  DeviceTensor out_t = poisoned(backend_, {c.B, c.T, c.C});

  backend_.embedding_forward(out_t.tensor, tokens_t.tensor, wte_t.tensor, wpe_t.tensor, static_cast<int>(c.T),
                             c.vocab_start);

  Doubles want = embedding_reference(tokens, to_doubles(wte), to_doubles(wpe), c.C, c.V_local, c.T, c.vocab_start);
  EXPECT_TRUE(all_close(download(backend_, out_t.tensor), want, {1e-6, 0}));
}

const auto kEmbeddingCases = ::testing::Values(EmbeddingCase{"B1_T1_C1_V1", 1, 1, 1, 1, 0, 1, true},
                                               EmbeddingCase{"B2_T7_C5_V11", 2, 7, 5, 11, 0, 11, true},
                                               EmbeddingCase{"B2_T7_C5_V11_NoWpe", 2, 7, 5, 11, 0, 11, false},
                                               EmbeddingCase{"B3_T4_C3_Shard4To8Of13", 3, 4, 3, 4, 4, 13, true},
                                               EmbeddingCase{"B2_T5_C3_Shard0To4Of13_NoWpe", 2, 5, 3, 4, 0, 13, false},
                                               EmbeddingCase{"B4_T64_C16_V3_Repeats", 4, 64, 16, 3, 0, 3, true});

INSTANTIATE_TEST_SUITE_P(Cpu, EmbeddingForward, kEmbeddingCases, CaseName());
INSTANTIATE_TEST_SUITE_P(CpuLarge, EmbeddingForward,
                         ::testing::Values(EmbeddingCase{"B4_T64_C768_Shard1000To2000Of2501", 4, 64, 768, 1000, 1000,
                                                         2501, true}),
                         CaseName());

// d_wte and d_wpe accumulate; repeated tokens add up, tokens outside the shard contribute nothing, wpe rows
// past seq_len are untouched.
class EmbeddingBackward : public KernelTest<EmbeddingCase> {};

TEST_P(EmbeddingBackward, MatchesFiniteDifferences) {
  const EmbeddingCase& c = GetParam();
  const int64_t N = c.B * c.T, P = c.T + kExtraPositions;
  Ints tokens = embedding_tokens(rng_, c);
  Floats wte = rng_.normal(c.V_local * c.C);
  Floats wpe = rng_.normal(P * c.C);
  Floats d_out = rng_.normal(N * c.C);
  Floats d_wte_prefill = rng_.normal(c.V_local * c.C);
  Floats d_wpe_prefill = rng_.normal(P * c.C);
  DeviceTensor tokens_t = upload(backend_, tokens, {c.B, c.T});
  DeviceTensor d_out_t = upload(backend_, d_out, {c.B, c.T, c.C});
  DeviceTensor d_wte_t = upload(backend_, d_wte_prefill, {c.V_local, c.C});
  DeviceTensor d_wpe_t = c.wpe ? upload(backend_, d_wpe_prefill, {P, c.C}) : DeviceTensor{};

  backend_.embedding_backward(d_wte_t.tensor, d_wpe_t.tensor, d_out_t.tensor, tokens_t.tensor, static_cast<int>(c.T),
                              c.vocab_start);

  const Doubles e = to_doubles(wte), p = to_doubles(wpe), r = to_doubles(d_out);
  auto loss = [&](const Doubles& wte_, const Doubles& wpe_) {
    return dot(embedding_reference(tokens, wte_, wpe_, c.C, c.V_local, c.T, c.vocab_start), r);
  };
  // Each gradient element sums up to N values of d_out in fp32 (N = 256 in the case with repeated tokens).
  const Tolerance tolerance{1e-5, 1e-5};
  Doubles want_d_wte = numeric_gradient([&](const Doubles& v) { return loss(v, p); }, e);
  EXPECT_TRUE(all_close(download(backend_, d_wte_t.tensor), plus(d_wte_prefill, want_d_wte), tolerance)) << "d_wte";
  if (c.wpe) {
    Doubles want_d_wpe = numeric_gradient([&](const Doubles& v) { return loss(e, v); }, p);
    EXPECT_TRUE(all_close(download(backend_, d_wpe_t.tensor), plus(d_wpe_prefill, want_d_wpe), tolerance)) << "d_wpe";
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, EmbeddingBackward, kEmbeddingCases, CaseName());

// ---- vocab-parallel cross-entropy -------------------------------------------------------------------------

// The vocabulary [0, V) is split into consecutive shards as tensor parallelism would: shard s holds
// shard_cols[s] real columns starting at the sum of the previous ones, stored in shard_width columns whose
// tail is padding. The test plays the all-reduces: max of row_max, sums of sum_exp and target_logit.
struct CrossEntropyCase {
  std::string name;
  int64_t N;
  std::vector<int64_t> shard_cols;
  int64_t shard_width;
  float d_scale;
};

// Padding holds large logits: if they leaked into the max or the softmax the result would be far off.
constexpr float kPaddingLogit = 30;
// Above this many logits, finite differences of the full loss are skipped (the closed form still applies).
constexpr int64_t kMaxFiniteDifferenceLogits = 1000;

class CrossEntropy : public KernelTest<CrossEntropyCase> {};

TEST_P(CrossEntropy, ShardedMatchesFullVocabulary) {
  const CrossEntropyCase& c = GetParam();
  const int64_t N = c.N, W = c.shard_width;
  const int64_t shards = std::ssize(c.shard_cols);
  const int64_t V = std::accumulate(c.shard_cols.begin(), c.shard_cols.end(), int64_t{0});
  std::vector<int64_t> starts(shards, 0);
  for (int64_t s = 1; s < shards; ++s) starts[s] = starts[s - 1] + c.shard_cols[s - 1];

  Floats logits = rng_.normal(N * V, 2);
  Ints targets = rng_.integers(N, 0, static_cast<int32_t>(V - 1));
  targets[0] = 0;
  if (N > 1) targets[1] = static_cast<int32_t>(V - 1);
  Doubles softmax;
  const Doubles want_losses = cross_entropy_reference(to_doubles(logits), targets, N, V, &softmax);

  std::vector<DeviceTensor> shard_logits;
  for (int64_t s = 0; s < shards; ++s) {
    Floats host(N * W, kPaddingLogit);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t j = 0; j < c.shard_cols[s]; ++j) host[n * W + j] = logits[n * V + starts[s] + j];
    }
    shard_logits.push_back(upload(backend_, host, {N, W}));
  }
  DeviceTensor targets_t = upload(backend_, targets, {N});

  // Pass 1: the max over each shard's real columns is exact; combine with max.
  Doubles row_max(N, -std::numeric_limits<double>::infinity());
  for (int64_t s = 0; s < shards; ++s) {
    DeviceTensor max_t = poisoned(backend_, {N});
    backend_.cross_entropy_row_max(max_t.tensor, shard_logits[s].tensor, c.shard_cols[s]);
    Doubles want(N, -std::numeric_limits<double>::infinity());
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t j = 0; j < c.shard_cols[s]; ++j) want[n] = std::max<double>(want[n], logits[n * V + starts[s] + j]);
    }
    Floats got = download(backend_, max_t.tensor);
    EXPECT_TRUE(all_close(got, want, kExact)) << "row_max of shard " << s;
    for (int64_t n = 0; n < N; ++n) row_max[n] = std::max<double>(row_max[n], got[n]);
  }
  DeviceTensor row_max_t = upload(backend_, to_floats(row_max), {N});

  // Pass 2: per-shard sum_exp against the global max, and the target logit where the shard holds the target.
  Doubles sum_exp(N, 0.0), target_logit(N, 0.0);
  for (int64_t s = 0; s < shards; ++s) {
    DeviceTensor sum_exp_t = poisoned(backend_, {N});
    DeviceTensor target_logit_t = poisoned(backend_, {N});
    backend_.cross_entropy_row_stats(sum_exp_t.tensor, target_logit_t.tensor, shard_logits[s].tensor, row_max_t.tensor,
                                     targets_t.tensor, starts[s], c.shard_cols[s]);
    Doubles want_sum(N, 0.0), want_target(N, 0.0);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t j = 0; j < c.shard_cols[s]; ++j) want_sum[n] += std::exp(logits[n * V + starts[s] + j] - row_max[n]);
      if (targets[n] >= starts[s] && targets[n] < starts[s] + c.shard_cols[s])
        want_target[n] = logits[n * V + targets[n]];
    }
    Floats got_sum = download(backend_, sum_exp_t.tensor), got_target = download(backend_, target_logit_t.tensor);
    const double terms = static_cast<double>(c.shard_cols[s]);
    EXPECT_TRUE(all_close(got_sum, want_sum, {1e-6 * (1 + std::sqrt(terms)), 0})) << "sum_exp of shard " << s;
    EXPECT_TRUE(all_close(got_target, want_target, kExact)) << "target_logit of shard " << s;
    for (int64_t n = 0; n < N; ++n) {
      sum_exp[n] += got_sum[n];
      target_logit[n] += got_target[n];
    }
  }
  DeviceTensor sum_exp_t = upload(backend_, to_floats(sum_exp), {N});
  DeviceTensor target_logit_t = upload(backend_, to_floats(target_logit), {N});

  // Pass 3: every shard computes the same full-vocabulary losses and its slice of the gradient.
  const Tolerance loss_tolerance{1e-5, 1e-5 * (1 + std::log(static_cast<double>(V)))};
  const Tolerance gradient_tolerance{1e-5, 1e-7 * std::abs(c.d_scale)};
  Floats full_gradient(N * V, kNaN);
  for (int64_t s = 0; s < shards; ++s) {
    DeviceTensor losses_t = poisoned(backend_, {N});
    backend_.cross_entropy_loss_backward(losses_t.tensor, shard_logits[s].tensor, row_max_t.tensor, sum_exp_t.tensor,
                                         target_logit_t.tensor, targets_t.tensor, Tensor(), starts[s], c.shard_cols[s],
                                         c.d_scale);
    EXPECT_TRUE(all_close(download(backend_, losses_t.tensor), want_losses, loss_tolerance)) << "losses of shard " << s;

    Floats got = download(backend_, shard_logits[s].tensor);
    Doubles want(N * W, 0.0);  // padding columns: exactly zero
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t j = 0; j < c.shard_cols[s]; ++j) {
        const int64_t v = starts[s] + j;
        want[n * W + j] = c.d_scale * (softmax[n * V + v] - (v == targets[n] ? 1.0 : 0.0));
        full_gradient[n * V + v] = got[n * W + j];
      }
      for (int64_t j = c.shard_cols[s]; j < W; ++j) {
        EXPECT_EQ(got[n * W + j], 0.0f) << "padding gradient, shard " << s << " row " << n << " column " << j;
      }
    }
    EXPECT_TRUE(all_close(got, want, gradient_tolerance)) << "d_logits of shard " << s;
  }

  // The closed form d_scale * (softmax - onehot) is itself checked against finite differences of the
  // reference loss d_scale * sum(losses).
  if (N * V <= kMaxFiniteDifferenceLogits) {
    Doubles want = numeric_gradient(
        [&](const Doubles& x) {
          Doubles losses = cross_entropy_reference(x, targets, N, V);
          return c.d_scale * std::accumulate(losses.begin(), losses.end(), 0.0);
        },
        to_doubles(logits));
    EXPECT_TRUE(all_close(full_gradient, want, {1e-5, 1e-6 * std::abs(c.d_scale)})) << "d_logits vs finite differences";
  }
}

// Per-token weights (supervised fine-tuning's loss mask over the counted tokens): row n of the gradient is
// d_scale * weights[n] * (softmax - onehot), exactly zero where the weight is 0, against the double reference and
// finite differences of d_scale * sum(weights * losses); weights of 1 give the unweighted op's bits.
TEST_P(CrossEntropy, WeightedBackwardMatchesReferenceAndFiniteDifferences) {
  const CrossEntropyCase& c = GetParam();
  const int64_t N = c.N, W = c.shard_width;
  const int64_t shards = std::ssize(c.shard_cols);
  const int64_t V = std::accumulate(c.shard_cols.begin(), c.shard_cols.end(), int64_t{0});
  std::vector<int64_t> starts(shards, 0);
  for (int64_t s = 1; s < shards; ++s) starts[s] = starts[s - 1] + c.shard_cols[s - 1];
  Floats logits = rng_.normal(N * V, 2);
  Ints targets = rng_.integers(N, 0, static_cast<int32_t>(V - 1));
  // 0/1 masks and one fractional weight; row 0 is always masked out.
  Floats weights(N);
  for (int64_t n = 0; n < N; ++n) weights[n] = n == 0 ? 0.0f : n % 3 == 2 ? 0.0f : n % 4 == 3 ? 0.375f : 1.0f;
  Doubles softmax;
  const Doubles want_losses = cross_entropy_reference(to_doubles(logits), targets, N, V, &softmax);
  // Row statistics from the double reference (the other test checks the passes that compute them).
  Floats row_max(N), sum_exp(N), target_logit(N);
  for (int64_t n = 0; n < N; ++n) {
    row_max[n] = *std::max_element(&logits[n * V], &logits[n * V] + V);
    double sum = 0;
    for (int64_t j = 0; j < V; ++j) sum += std::exp(static_cast<double>(logits[n * V + j]) - row_max[n]);
    sum_exp[n] = static_cast<float>(sum);
    target_logit[n] = logits[n * V + targets[n]];
  }
  DeviceTensor targets_t = upload(backend_, targets, {N});
  DeviceTensor weights_t = upload(backend_, weights, {N});
  DeviceTensor ones_t = upload(backend_, Floats(N, 1.0f), {N});
  DeviceTensor row_max_t = upload(backend_, row_max, {N});
  DeviceTensor sum_exp_t = upload(backend_, sum_exp, {N});
  DeviceTensor target_logit_t = upload(backend_, target_logit, {N});
  Floats full_gradient(N * V, kNaN);
  for (int64_t s = 0; s < shards; ++s) {
    Floats host(N * W, kPaddingLogit);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t j = 0; j < c.shard_cols[s]; ++j) host[n * W + j] = logits[n * V + starts[s] + j];
    }
    auto run = [&](const Tensor& w) {
      DeviceTensor shard = upload(backend_, host, {N, W});
      DeviceTensor losses_t = poisoned(backend_, {N});
      backend_.cross_entropy_loss_backward(losses_t.tensor, shard.tensor, row_max_t.tensor, sum_exp_t.tensor,
                                           target_logit_t.tensor, targets_t.tensor, w, starts[s], c.shard_cols[s],
                                           c.d_scale);
      return std::make_pair(download(backend_, losses_t.tensor), download(backend_, shard.tensor));
    };
    const auto [losses, got] = run(weights_t.tensor);
    // The losses are the per-token losses whatever the weights: the caller weights their sum.
    EXPECT_TRUE(all_close(losses, want_losses, {1e-5, 1e-5 * (1 + std::log(static_cast<double>(V)))}));
    const auto [unweighted_losses, unweighted] = run(Tensor());
    const auto [ones_losses, ones] = run(ones_t.tensor);
    EXPECT_EQ(ones, unweighted) << "weights of 1 must give the unweighted gradient bit for bit, shard " << s;
    EXPECT_EQ(ones_losses, unweighted_losses);
    Doubles want(N * W, 0.0);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t j = 0; j < c.shard_cols[s]; ++j) {
        const int64_t v = starts[s] + j;
        want[n * W + j] = c.d_scale * weights[n] * (softmax[n * V + v] - (v == targets[n] ? 1.0 : 0.0));
        full_gradient[n * V + v] = got[n * W + j];
      }
      for (int64_t j = 0; j < W; ++j) {
        if (weights[n] == 0.0f || j >= c.shard_cols[s]) {
          EXPECT_EQ(got[n * W + j], 0.0f) << "row " << n << " (weight " << weights[n] << ") column " << j;
        }
      }
    }
    EXPECT_TRUE(all_close(got, want, {1e-5, 1e-7 * std::abs(c.d_scale)})) << "d_logits of shard " << s;
  }
  if (N * V <= kMaxFiniteDifferenceLogits) {
    Doubles want = numeric_gradient(
        [&](const Doubles& x) {
          Doubles losses = cross_entropy_reference(x, targets, N, V);
          double sum = 0;
          for (int64_t n = 0; n < N; ++n) sum += weights[n] * losses[n];
          return c.d_scale * sum;
        },
        to_doubles(logits));
    EXPECT_TRUE(all_close(full_gradient, want, {1e-5, 1e-6 * std::abs(c.d_scale)})) << "d_logits vs finite differences";
  }
}

INSTANTIATE_TEST_SUITE_P(Cpu, CrossEntropy,
                         ::testing::Values(CrossEntropyCase{"N3_V1", 3, {1}, 1, 1.0f / 3},
                                           CrossEntropyCase{"N1_V7_Shards3And4", 1, {3, 4}, 4, 1.0f},
                                           CrossEntropyCase{"N5_V11_OneShardPaddedTo16", 5, {11}, 16, 0.2f},
                                           CrossEntropyCase{"N7_V11_Shards4And4And3", 7, {4, 4, 3}, 4, 1.0f / 7},
                                           CrossEntropyCase{"N6_V11_Shards6And5PaddedTo8", 6, {6, 5}, 8, -0.5f},
                                           CrossEntropyCase{
                                               "N16_V50257_TwoShardsOf25152", 16, {25152, 25105}, 25152, 1.0f / 16}),
                         CaseName());

// ---- AdamW ------------------------------------------------------------------------------------------------

struct AdamWCase {
  std::string name;
  int64_t n;
  AdamWStep hyper;  // hyper.step is replaced by first_step, first_step + 1, ...
  int64_t first_step;
  int steps;
};

// Each step is checked against the double reference started from the kernel's own fp32 state, so errors do
// not compound: param within a few fp32 ulps plus 1e-5 of the update, moments within 1e-5 relative.
class AdamW : public KernelTest<AdamWCase> {};

TEST_P(AdamW, MatchesPyTorchFormulaEveryStep) {
  const AdamWCase& c = GetParam();
  Floats param = rng_.normal(c.n);
  // A run resumed at a late step starts with moments; a fresh one with zeros.
  Floats m = c.first_step > 1 ? rng_.normal(c.n, 0.1) : Floats(c.n, 0.0f);
  Floats v = c.first_step > 1 ? rng_.uniform(c.n, 0, 0.1) : Floats(c.n, 0.0f);
  DeviceTensor param_t = upload(backend_, param, {c.n});
  DeviceTensor m_t = upload(backend_, m, {c.n});
  DeviceTensor v_t = upload(backend_, v, {c.n});
  DeviceTensor grad_t = upload(backend_, Floats(c.n, 0.0f), {c.n});

  for (int k = 0; k < c.steps; ++k) {
    Floats grad = rng_.normal(c.n);
    for (int64_t i = 4; i < c.n; i += 5) grad[i] = 0;  // zero gradients: the update is decay plus momentum
    backend_.copy_from_host(grad_t.tensor, grad.data());
    AdamWStep step = c.hyper;
    step.step = c.first_step + k;

    Doubles want_param = to_doubles(download(backend_, param_t.tensor));
    Doubles want_m = to_doubles(download(backend_, m_t.tensor));
    Doubles want_v = to_doubles(download(backend_, v_t.tensor));
    // m = beta1*m + (1-beta1)*g can cancel, so its fp32 error is relative to the size of those terms.
    double m_terms = 0;
    for (int64_t i = 0; i < c.n; ++i) {
      m_terms =
          std::max(m_terms, std::abs(step.beta1 * want_m[i]) + std::abs((1 - step.beta1) * grad[i] * step.grad_scale));
    }
    adamw_reference(want_param, want_m, want_v, grad, step);

    backend_.adamw_update(param_t.tensor, grad_t.tensor, m_t.tensor, v_t.tensor, step, Tensor());

    EXPECT_TRUE(all_close(download(backend_, param_t.tensor), want_param, {5e-7, 1e-5 * step.lr}))
        << "param after step " << step.step;
    EXPECT_TRUE(all_close(download(backend_, m_t.tensor), want_m, {1e-5, 1e-6 * m_terms}))
        << "m after step " << step.step;
    EXPECT_TRUE(all_close(download(backend_, v_t.tensor), want_v, {1e-5, 1e-12})) << "v after step " << step.step;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cpu, AdamW,
    ::testing::Values(
        AdamWCase{"N1_NoDecay", 1, {.lr = 1e-3f}, 1, 3},
        AdamWCase{"N1000_Decay0p1", 1000, {.lr = 6e-4f, .weight_decay = 0.1f}, 1, 5},
        AdamWCase{
            "N37_GradScale0p25_Beta0p8And0p999",
            37,
            {.lr = 1e-2f, .beta1 = 0.8f, .beta2 = 0.999f, .eps = 1e-6f, .weight_decay = 0.01f, .grad_scale = 0.25f},
            1,
            10},
        AdamWCase{"N513_ResumedAtStep1000", 513, {.lr = 3e-4f, .weight_decay = 0.1f, .grad_scale = 2.0f}, 1000, 3},
        AdamWCase{"N100003_GradScale0p5", 100003, {.lr = 1e-3f, .grad_scale = 0.5f}, 1, 2}),
    CaseName());

}  // namespace
}  // namespace tessera

// ---- fast_math: the vectorizable exp/tanh used inside the kernels ------------------------------------------

namespace {

TEST(FastMath, ExpWithinTwoUlpOverTheUsedRange) {
  double worst_ulps = 0;
  for (double x = -87.0; x <= 88.0; x += 0.000731) {
    const float xf = static_cast<float>(x);
    const double want = std::exp(static_cast<double>(xf));
    const double got = tessera::cpu::exp_approx(xf);
    const double ulp = std::nextafter(static_cast<float>(want), INFINITY) - static_cast<float>(want);
    worst_ulps = std::max(worst_ulps, std::fabs(got - want) / ulp);
  }
  EXPECT_LE(worst_ulps, 2.0);
  EXPECT_EQ(tessera::cpu::exp_approx(0.0f), 1.0f);
  EXPECT_GE(tessera::cpu::exp_approx(-1000.0f), 0.0f);
  EXPECT_LT(tessera::cpu::exp_approx(-1000.0f), 1e-37f);
}

TEST(FastMath, TanhAbsoluteErrorBelow3e7) {
  double worst = 0;
  for (double x = -20.0; x <= 20.0; x += 0.000377) {
    const float xf = static_cast<float>(x);
    worst = std::max(worst, std::fabs(tessera::cpu::tanh_approx(xf) - std::tanh(static_cast<double>(xf))));
  }
  EXPECT_LT(worst, 3e-7);
}

}  // namespace

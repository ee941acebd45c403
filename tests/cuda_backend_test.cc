// Table-driven parity of every CudaBackend op with CpuBackend, the reference (whose own correctness
// kernels_test proves against double-precision math), with f32 and with bf16 compute tensors (Note [Precision]
// in core/backend.h).
//
// Each case lists its tensors with a role: inputs get fresh random values; outputs the contract calls
// "overwrites" are poisoned (NaN, or INT32_MIN for integers) before the call on both backends, so an element the
// GPU skips fails the comparison; outputs that accumulate, and tensors updated in place, start from the same
// random values on both. A tensor is either a compute tensor, whose dtype is the case's (f32 or bf16), or has a
// fixed dtype (statistics and parameter gradients f32, tokens i32). Values are generated in f32 and rounded to
// bf16 on the host for bf16 tensors, so both backends see the same inputs; results are compared in f32. Inputs
// that must be consistent with others (LayerNorm statistics, logit statistics, the attention forward's output
// and lse) are computed on the host, in double, from the values as rounded.
//
// Shapes are odd on purpose (not multiples of warps, tiles or vector widths: N = 37, C = 72, head size 24,
// T = 37, a vocabulary of 1000 with 997 valid columns), and some tensors sit at unaligned offsets of their
// buffers, as views into flat parameter buffers do. Tolerances: f32's for f32 cases (the backends sum in
// different orders); for bf16 cases at least one bf16 rounding (relative 1e-2), since two nearly equal f32
// results may round to neighbouring bf16 values.
//
// Ops with more than one GPU path run on the GPU first, and the path taken picks the reference and tolerance
// (Case::check), printed as "[   PATH   ]": bf16 attention on cuDNN is compared with a host model of cuDNN's
// bf16 roundings (tests/attention_reference.h), on Tessera's kernels with CpuBackend; matmul + GELU by whether
// cuBLASLt's GELU epilogue ran (Note [GELU epilogue]).
//
// Labelled `gpu`: every test skips itself when cudaGetDeviceCount reports no GPU.
#include "kernels/cuda/cuda_backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iomanip>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/bf16.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/device.h"
#include "tests/attention_reference.h"

namespace tessera {
namespace {

using Floats = std::vector<float>;
using Ints = std::vector<int32_t>;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int32_t kIntPoison = std::numeric_limits<int32_t>::min();

// values as a tensor of `dtype` will hold them (rounded to nearest even for bf16).
Floats rounded(Floats values, DType dtype) {
  if (dtype == DType::kBF16) {
    for (float& x : values) x = round_to_bf16(x);
  }
  return values;
}

class Rng {
 public:
  explicit Rng(uint32_t seed) : generator_(seed) {}
  Floats normal(int64_t n, double stddev = 1) {
    std::normal_distribution<double> distribution(0, stddev);
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
  Ints integers(int64_t n, int32_t low, int32_t high) {
    std::uniform_int_distribution<int32_t> distribution(low, high);
    Ints values(n);
    for (int32_t& x : values) x = distribution(generator_);
    return values;
  }

 private:
  std::mt19937 generator_;
};

// ---- the table ----------------------------------------------------------------------------------------------

enum class Role {
  kInput,    // random values, not compared
  kOutput,   // poisoned, compared
  kInOut,    // random values (accumulated into or updated in place), compared
  kScratch,  // poisoned, not compared
  kNone,     // an undefined Tensor (an optional argument left out)
};

struct Arg {
  Role role = Role::kInput;
  bool compute = true;        // a compute tensor: the case's dtype; else `dtype`
  DType dtype = DType::kF32;  // of tensors that are not compute tensors
  std::vector<int64_t> shape;
  Floats f;            // values of inputs and in-out tensors (rounded on upload for bf16)
  Ints i;              // i32 values of inputs
  int64_t offset = 0;  // elements between the buffer's start and the tensor: unaligned views
};

struct Tolerance {
  double rtol;
  double atol;
};
constexpr Tolerance kFp32{1e-5, 1e-6};

// What the GPU ran, for ops with more than one path: the attention engine (CudaBackend::attention_engine) and
// whether the product took cuBLASLt's GELU_AUX_BIAS epilogue (Gemm::epilogues_taken).
struct GpuPath {
  std::string attention_engine;
  bool gelu_epilogue = false;
};

// The reference and tolerance of a case for the path its GPU run took.
struct Check {
  std::string path;  // printed with the result
  Tolerance tolerance = kFp32;
  std::function<void(Backend&, const std::vector<Tensor>&)> reference;  // run on the CPU; null: the case's op
  std::vector<Floats> slack;  // per compared output: extra absolute tolerance per element; missing: none
};

struct Case {
  std::string name;
  std::vector<Arg> args;
  std::function<void(Backend&, const std::vector<Tensor>&)> op;
  Tolerance tolerance = kFp32;
  DType compute = DType::kF32;                 // the dtype of the compute tensors
  std::function<Check(const GpuPath&)> check = nullptr;  // null: CpuBackend running op, within `tolerance`
};

DType dtype_of(const Arg& arg, const Case& c) { return arg.compute ? c.compute : arg.dtype; }

// A bf16 value cannot be compared more tightly than one rounding; f32 values keep the case's tolerance.
Tolerance tolerance_for(DType dtype, Tolerance tolerance) {
  if (dtype != DType::kBF16) return tolerance;
  return {std::max(tolerance.rtol, 1e-2), tolerance.atol};
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Compute tensors (the case's dtype).
Arg input(std::vector<int64_t> shape, Floats values, int64_t offset = 0) {
  return Arg{Role::kInput, true, DType::kF32, std::move(shape), std::move(values), {}, offset};
}
Arg output(std::vector<int64_t> shape) { return Arg{Role::kOutput, true, DType::kF32, std::move(shape), {}, {}, 0}; }
Arg in_out(std::vector<int64_t> shape, Floats values, int64_t offset = 0) {
  return Arg{Role::kInOut, true, DType::kF32, std::move(shape), std::move(values), {}, offset};
}
// Tensors of a fixed dtype: statistics, parameter gradients, optimizer state (f32), tokens (i32), and the two
// sides of a conversion.
Arg input_of(DType dtype, std::vector<int64_t> shape, Floats values, int64_t offset = 0) {
  return Arg{Role::kInput, false, dtype, std::move(shape), std::move(values), {}, offset};
}
Arg output_of(DType dtype, std::vector<int64_t> shape) {
  return Arg{Role::kOutput, false, dtype, std::move(shape), {}, {}, 0};
}
Arg in_out_of(DType dtype, std::vector<int64_t> shape, Floats values, int64_t offset = 0) {
  return Arg{Role::kInOut, false, dtype, std::move(shape), std::move(values), {}, offset};
}
Arg stats(std::vector<int64_t> shape, Floats values) {
  return input_of(DType::kF32, std::move(shape), std::move(values));
}
Arg stats_out(std::vector<int64_t> shape) { return output_of(DType::kF32, std::move(shape)); }
Arg grad(std::vector<int64_t> shape, Floats values, int64_t offset = 0) {
  return in_out_of(DType::kF32, std::move(shape), std::move(values), offset);
}
Arg tokens(std::vector<int64_t> shape, Ints values) {
  return Arg{Role::kInput, false, DType::kI32, std::move(shape), {}, std::move(values), 0};
}
Arg none() { return Arg{Role::kNone, true, DType::kF32, {1}, {}, {}, 0}; }

// ---- running a case on one backend ----------------------------------------------------------------------------

Tensor make_tensor(void* data, DType dtype, Device device, const std::vector<int64_t>& shape) {
  switch (shape.size()) {
    case 1:
      return Tensor(data, dtype, device, {shape[0]});
    case 2:
      return Tensor(data, dtype, device, {shape[0], shape[1]});
    case 3:
      return Tensor(data, dtype, device, {shape[0], shape[1], shape[2]});
    default:
      return Tensor(data, dtype, device, {shape[0], shape[1], shape[2], shape[3]});
  }
}

// The bytes of every compared tensor after the op, in argument order.
std::vector<std::vector<std::byte>> run_case(Backend& backend, const Case& c,
                                             const std::function<void(Backend&, const std::vector<Tensor>&)>& op) {
  std::vector<Buffer> buffers;
  std::vector<Tensor> tensors;
  for (const Arg& arg : c.args) {
    if (arg.role == Role::kNone) {
      tensors.emplace_back();
      continue;
    }
    const int64_t n = numel(arg.shape);
    const DType dtype = dtype_of(arg, c);
    const size_t element = dtype_size(dtype);
    buffers.push_back(backend.allocate(static_cast<size_t>(arg.offset + n) * element));
    Tensor t = make_tensor(static_cast<char*>(buffers.back().data()) + arg.offset * element, dtype, backend.device(),
                           arg.shape);
    if (dtype == DType::kI32) {
      Ints values = arg.role == Role::kInput ? arg.i : Ints(n, kIntPoison);
      backend.copy_from_host(t, values.data());
    } else {
      const bool poisoned = arg.role == Role::kOutput || arg.role == Role::kScratch;
      Floats values = poisoned ? Floats(n, kNaN) : arg.f;
      EXPECT_EQ(std::ssize(values), n) << c.name << ": values do not match the shape";
      values.resize(n);
      if (dtype == DType::kBF16) {
        std::vector<uint16_t> halves(values.size());
        for (size_t e = 0; e < values.size(); ++e) halves[e] = f32_to_bf16(values[e]);
        backend.copy_from_host(t, halves.data());
      } else {
        backend.copy_from_host(t, values.data());
      }
    }
    tensors.push_back(t);
  }
  (op ? op : c.op)(backend, tensors);
  std::vector<std::vector<std::byte>> results;
  for (size_t a = 0; a < c.args.size(); ++a) {
    if (c.args[a].role != Role::kOutput && c.args[a].role != Role::kInOut) continue;
    std::vector<std::byte> bytes(tensors[a].bytes());
    backend.copy_to_host(bytes.data(), tensors[a]);
    results.push_back(std::move(bytes));
  }
  return results;
}

// Element i passes when |gpu - cpu| <= atol + rtol |cpu| + slack[i] (slack empty: 0).
::testing::AssertionResult all_close(const std::vector<std::byte>& got_bytes, const std::vector<std::byte>& want_bytes,
                                     DType dtype, Tolerance tolerance, const Floats& slack = {}) {
  if (got_bytes.size() != want_bytes.size()) {
    return ::testing::AssertionFailure() << got_bytes.size() << " bytes from the GPU, " << want_bytes.size()
                                         << " from the CPU";
  }
  const size_t element = dtype_size(dtype);
  const size_t n = want_bytes.size() / element;
  int64_t mismatches = 0;
  std::ostringstream first;
  first << std::setprecision(9);
  for (size_t i = 0; i < n; ++i) {
    bool ok = false;
    double got = 0, want = 0;
    if (dtype == DType::kI32) {
      int32_t g = 0, w = 0;
      std::memcpy(&g, &got_bytes[4 * i], 4);
      std::memcpy(&w, &want_bytes[4 * i], 4);
      ok = g == w;
      got = g;
      want = w;
    } else {
      float g = 0, w = 0;
      if (dtype == DType::kBF16) {
        uint16_t gh = 0, wh = 0;
        std::memcpy(&gh, &got_bytes[2 * i], 2);
        std::memcpy(&wh, &want_bytes[2 * i], 2);
        g = bf16_to_f32(gh);
        w = bf16_to_f32(wh);
      } else {
        std::memcpy(&g, &got_bytes[4 * i], 4);
        std::memcpy(&w, &want_bytes[4 * i], 4);
      }
      const double extra = i < slack.size() ? slack[i] : 0.0;
      ok = g == w || std::abs(static_cast<double>(g) - w) <= tolerance.atol + tolerance.rtol * std::abs(w) + extra;
      got = g;
      want = w;
    }
    if (!ok) {
      if (mismatches < 8) first << "\n  [" << i << "] gpu " << got << ", cpu " << want;
      ++mismatches;
    }
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << mismatches << " of " << n << " values differ (rtol " << tolerance.rtol
                                       << ", atol " << tolerance.atol << ")" << first.str();
}

// ---- host helpers for inputs that must be consistent (statistics of other inputs) -------------------------------

void row_statistics(const Floats& x, int64_t N, int64_t C, double eps, Floats* mean, Floats* rstd) {
  mean->assign(N, 0.0f);
  rstd->assign(N, 0.0f);
  for (int64_t r = 0; r < N; ++r) {
    double m = 0, v = 0;
    for (int64_t j = 0; j < C; ++j) m += x[r * C + j];
    m /= static_cast<double>(C);
    for (int64_t j = 0; j < C; ++j) v += (x[r * C + j] - m) * (x[r * C + j] - m);
    (*mean)[r] = static_cast<float>(m);
    (*rstd)[r] = static_cast<float>(1 / std::sqrt(v / static_cast<double>(C) + eps));
  }
}

// Row max, sum of exponentials and target logit of logits[N, V] over the first `valid` columns, as the
// cross-entropy passes define them.
void logit_statistics(const Floats& logits, const Ints& targets, int64_t N, int64_t V, int64_t valid,
                      int64_t vocab_start, Floats* row_max, Floats* sum_exp, Floats* target_logit) {
  row_max->assign(N, 0.0f);
  sum_exp->assign(N, 0.0f);
  target_logit->assign(N, 0.0f);
  for (int64_t r = 0; r < N; ++r) {
    float m = -INFINITY;
    for (int64_t j = 0; j < valid; ++j) m = std::max(m, logits[r * V + j]);
    double s = 0;
    for (int64_t j = 0; j < valid; ++j) s += std::exp(static_cast<double>(logits[r * V + j]) - m);
    (*row_max)[r] = m;
    (*sum_exp)[r] = static_cast<float>(s);
    const int64_t t = targets[r] - vocab_start;
    (*target_logit)[r] = t >= 0 && t < valid ? logits[r * V + t] : 0.0f;
  }
}

// Writes values (f32, rounded to bf16 for a bf16 tensor) into a tensor of a CPU backend: how a reference computed
// on the host becomes a case's result.
void upload(Backend& backend, const Tensor& t, const Floats& values) {
  EXPECT_EQ(std::ssize(values), t.numel());
  if (t.dtype() == DType::kBF16) {
    std::vector<uint16_t> halves(values.size());
    for (size_t e = 0; e < values.size(); ++e) halves[e] = f32_to_bf16(values[e]);
    backend.copy_from_host(t, halves.data());
  } else {
    backend.copy_from_host(t, values.data());
  }
}

// Note [GELU epilogue]
// cublasLt.h documents GELU_AUX_BIAS as "apply Bias and then GELU transform" without saying which GELU (the erf
// form or the tanh approximation that Tessera's kernels and the CPU use) or how accurately it is computed. So
// the epilogue path is held to the f32 (bf16) product's tolerance plus, per element of the GELU output, a slack
// covering both unknowns at pre-activation x:
//   |gelu_tanh(x) - gelu_erf(x)|  (at most 4.7e-4, near |x| = 2)
//   + 0.5 |x| 2^-11               (tanh evaluated with a relative error of up to 2^-11, that of PTX's
//                                  tanh.approx.f32: GELU = 0.5 x (1 + tanh u) moves by 0.5 |x| |d tanh|)
// The fallback (product, then Tessera's GELU kernel: the CPU's formula) keeps the plain tolerances. The test
// prints which path ran and, for the epilogue, how far the GPU's GELU is from each form of its own
// pre-activation, which says which one cuBLASLt computes.
double gelu_tanh(double x) { return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
double gelu_erf(double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }

Floats gelu_epilogue_slack(const Floats& inp, const Floats& weight, const Floats& bias, int64_t N, int64_t C,
                           int64_t OC) {
  Floats slack(N * OC);
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t o = 0; o < OC; ++o) {
      double x = bias[o];
      for (int64_t c = 0; c < C; ++c) x += static_cast<double>(inp[i * C + c]) * weight[o * C + c];
      slack[i * OC + o] = static_cast<float>(std::abs(gelu_tanh(x) - gelu_erf(x)) + 0.5 * std::abs(x) * 0x1p-11);
    }
  }
  return slack;
}

// ---- the cases --------------------------------------------------------------------------------------------------

using Tensors = std::vector<Tensor>;

const char* suffix(DType dtype) { return dtype == DType::kBF16 ? "_bf16" : "_f32"; }

// Cases whose tensors have fixed dtypes: conversions, integer fill, AdamW (f32 master weights, bf16 copy).
void add_fixed_dtype_cases(Rng& rng, std::vector<Case>& cases) {
  cases.push_back(
      {"fill_i32", {output_of(DType::kI32, {37})}, [](Backend& b, const Tensors& t) { b.fill(t[0], 7.0f); }});
  cases.push_back({"copy_f32_to_bf16",
                   {output_of(DType::kBF16, {517}), input_of(DType::kF32, {517}, rng.normal(517), 3)},
                   [](Backend& b, const Tensors& t) { b.copy(t[0], t[1]); }});
  cases.push_back({"copy_bf16_to_f32",
                   {output_of(DType::kF32, {517}), input_of(DType::kBF16, {517}, rng.normal(517), 1)},
                   [](Backend& b, const Tensors& t) { b.copy(t[0], t[1]); }});
  // Halfway cases of bf16 rounding: ties go to even, on both backends.
  {
    Floats ties;
    for (uint32_t low : {0x00008000u, 0x00018000u, 0x00007fffu, 0x00008001u}) {
      for (uint32_t high : {0x3f800000u, 0xbf800000u, 0x42480000u}) {
        const uint32_t bits = high | low;
        float x;
        std::memcpy(&x, &bits, sizeof(x));
        ties.push_back(x);
      }
    }
    const int64_t n = std::ssize(ties);
    cases.push_back({"copy_f32_to_bf16_ties",
                     {output_of(DType::kBF16, {n}), input_of(DType::kF32, {n}, ties)},
                     [](Backend& b, const Tensors& t) { b.copy(t[0], t[1]); },
                     {0, 0}});
  }

  // AdamW, decayed and not, with a clipping factor, at a later step; with and without the bf16 compute copy.
  for (const float weight_decay : {0.0f, 0.1f}) {
    for (const bool with_copy : {false, true}) {
      const int64_t n = 1003;
      AdamWStep step;
      step.lr = 3e-3f;
      step.weight_decay = weight_decay;
      step.step = 3;
      step.grad_scale = 0.7f;
      std::string name = weight_decay == 0 ? "adamw_update" : "adamw_update_decayed";
      if (with_copy) name += "_with_bf16_copy";
      cases.push_back(
          {name,
           {in_out_of(DType::kF32, {n}, rng.normal(n), 1), input_of(DType::kF32, {n}, rng.normal(n)),
            in_out_of(DType::kF32, {n}, rng.normal(n, 0.1)), in_out_of(DType::kF32, {n}, rng.uniform(n, 0, 0.5)),
            with_copy ? output_of(DType::kBF16, {n}) : none()},
           [step](Backend& b, const Tensors& t) { b.adamw_update(t[0], t[1], t[2], t[3], step, t[4]); },
           {1e-5, 1e-6}});
    }
  }
}

// Every op with compute tensors of `dtype`; `tol(f32 tolerance)` widens a tolerance for bf16.
void add_compute_cases(Rng& rng, DType dtype, std::vector<Case>& cases) {
  const bool bf16 = dtype == DType::kBF16;
  // f32: the given tolerance. bf16: one rounding (relative 1e-2, applied per bf16 value by tolerance_for) on top
  // of an absolute floor for values that are differences of nearly equal numbers.
  const auto tol = [bf16](Tolerance f32, double bf16_atol = 1e-3) {
    return bf16 ? Tolerance{std::max(f32.rtol, 1e-2), std::max(f32.atol, bf16_atol)} : f32;
  };
  const auto push = [&](std::string name, std::vector<Arg> args, std::function<void(Backend&, const Tensors&)> op,
                        Tolerance tolerance) {
    cases.push_back({name + suffix(dtype), std::move(args), std::move(op), tolerance, dtype});
  };

  // Memory and elementwise ops.
  push(
      "fill", {output({1001})}, [](Backend& b, const Tensors& t) { b.fill(t[0], 3.5f); }, tol(kFp32));
  push(
      "fill_rounded", {output({33})}, [](Backend& b, const Tensors& t) { b.fill(t[0], 0.1f); }, tol(kFp32));
  push(
      "copy", {output({517}), input({517}, rng.normal(517), 3)},
      [](Backend& b, const Tensors& t) { b.copy(t[0], t[1]); }, tol(kFp32));
  push(
      "add", {output({3, 337}), input({3, 337}, rng.normal(1011)), input({3, 337}, rng.normal(1011))},
      [](Backend& b, const Tensors& t) { b.add(t[0], t[1], t[2]); }, tol(kFp32));
  push(
      "add_in_place", {in_out({1011}, rng.normal(1011)), input({1011}, rng.normal(1011))},
      [](Backend& b, const Tensors& t) { b.add(t[0], t[0], t[1]); }, tol(kFp32));
  push(
      "scale", {in_out({999}, rng.normal(999), 1)}, [](Backend& b, const Tensors& t) { b.scale(t[0], -0.37f); },
      tol(kFp32));
  push(
      "gelu_forward", {output({7, 143}), input({7, 143}, rng.normal(1001, 2))},
      [](Backend& b, const Tensors& t) { b.gelu_forward(t[0], t[1]); }, tol(kFp32));
  push(
      "gelu_backward", {output({1001}), input({1001}, rng.normal(1001, 2)), input({1001}, rng.normal(1001))},
      [](Backend& b, const Tensors& t) { b.gelu_backward(t[0], t[1], t[2]); }, tol(kFp32));
  push(
      "gelu_backward_in_place", {input({1001}, rng.normal(1001, 2)), in_out({1001}, rng.normal(1001))},
      [](Backend& b, const Tensors& t) { b.gelu_backward(t[1], t[0], t[1]); }, tol(kFp32));

  // Linear layers: (N, C, OC); tolerances grow with the reduction length. OC = 72 is a multiple of 8 (the GELU
  // epilogue's condition), 37 and 211 are not.
  struct MatmulShape {
    int64_t N, C, OC;
    Tolerance tolerance;
  };
  for (const MatmulShape& s :
       {MatmulShape{1, 1, 1, kFp32}, MatmulShape{7, 13, 37, kFp32}, MatmulShape{37, 72, 72, {1e-5, 1e-5}},
        MatmulShape{65, 129, 211, {1e-4, 1e-5}}, MatmulShape{128, 768, 333, {1e-4, 1e-4}}}) {
    const std::string shape = "_" + std::to_string(s.N) + "x" + std::to_string(s.C) + "x" + std::to_string(s.OC);
    const Tolerance t = tol(s.tolerance);
    const auto forward = [](Backend& b, const Tensors& t) { b.matmul_forward(t[0], t[1], t[2], t[3]); };
    push("matmul_forward" + shape,
         {output({s.N, s.OC}), input({s.N, s.C}, rng.normal(s.N * s.C)),
          input({s.OC, s.C}, rng.normal(s.OC * s.C, 0.1)), input({s.OC}, rng.normal(s.OC))},
         forward, t);
    push("matmul_forward_no_bias" + shape,
         {output({s.N, s.OC}), input({s.N, s.C}, rng.normal(s.N * s.C)),
          input({s.OC, s.C}, rng.normal(s.OC * s.C, 0.1)), none()},
         forward, t);
    // Parameters at odd offsets of a flat buffer, as in the model (the bias epilogue may not take them).
    push("matmul_forward_unaligned" + shape,
         {output({s.N, s.OC}), input({s.N, s.C}, rng.normal(s.N * s.C)),
          input({s.OC, s.C}, rng.normal(s.OC * s.C, 0.1), 3), input({s.OC}, rng.normal(s.OC), 1)},
         forward, t);
    // matmul + GELU: the fused epilogue rounds the pre-activation after GELU reads it, the reference before, so
    // bf16 allows one more rounding.
    // The tolerance depends on the path (Note [GELU epilogue]): the fallback is the CPU's sequence (product
    // rounded, GELU of it), the epilogue rounds the pre-activation after GELU reads it (bf16: one more rounding)
    // and computes a GELU of its own.
    const auto gelu = [](Backend& b, const Tensors& t) { b.matmul_gelu_forward(t[0], t[1], t[2], t[3], t[4]); };
    const Tolerance fallback_tolerance = bf16 ? t : Tolerance{std::max(s.tolerance.rtol, 1e-5), 1e-5};
    const Tolerance epilogue_tolerance = bf16 ? Tolerance{2e-2, 2e-3} : fallback_tolerance;
    for (const bool unaligned : {false, true}) {
      const Floats inp = rounded(rng.normal(s.N * s.C), dtype), weight = rounded(rng.normal(s.OC * s.C, 0.1), dtype),
                   bias_values = rounded(rng.normal(s.OC), dtype);
      const Floats slack = gelu_epilogue_slack(inp, weight, bias_values, s.N, s.C, s.OC);
      push(unaligned ? "matmul_gelu_forward_unaligned" + shape : "matmul_gelu_forward" + shape,
           {output({s.N, s.OC}), output({s.N, s.OC}), input({s.N, s.C}, inp),
            input({s.OC, s.C}, weight, unaligned ? 1 : 0), input({s.OC}, bias_values, unaligned ? 1 : 0)},
           gelu, fallback_tolerance);
      cases.back().check = [=](const GpuPath& path) {
        if (!path.gelu_epilogue)
          return Check{"fallback: product, then Tessera's GELU kernel", fallback_tolerance, {}, {}};
        return Check{"cuBLASLt GELU_AUX_BIAS epilogue", epilogue_tolerance, {}, {slack, {}}};
      };
    }
    const auto backward = [](Backend& b, const Tensors& t) { b.matmul_backward(t[0], t[1], t[2], t[3], t[4], t[5]); };
    push("matmul_backward" + shape,
         {output({s.N, s.C}), grad({s.OC, s.C}, rng.normal(s.OC * s.C)), grad({s.OC}, rng.normal(s.OC)),
          input({s.N, s.OC}, rng.normal(s.N * s.OC)), input({s.N, s.C}, rng.normal(s.N * s.C)),
          input({s.OC, s.C}, rng.normal(s.OC * s.C, 0.1))},
         backward, t);
    push("matmul_backward_weight_only" + shape,
         {none(), grad({s.OC, s.C}, rng.normal(s.OC * s.C), 5), none(), input({s.N, s.OC}, rng.normal(s.N * s.OC)),
          input({s.N, s.C}, rng.normal(s.N * s.C)), input({s.OC, s.C}, rng.normal(s.OC * s.C, 0.1))},
         backward, t);
    push("matmul_backward_unaligned_bias" + shape,
         {output({s.N, s.C}), grad({s.OC, s.C}, rng.normal(s.OC * s.C), 1), grad({s.OC}, rng.normal(s.OC), 7),
          input({s.N, s.OC}, rng.normal(s.N * s.OC)), input({s.N, s.C}, rng.normal(s.N * s.C)),
          input({s.OC, s.C}, rng.normal(s.OC * s.C, 0.1))},
         backward, t);
  }

  // LayerNorm and residual + LayerNorm: (N, C).
  for (const auto& [N, C] : {std::pair<int64_t, int64_t>{1, 1}, {9, 67}, {37, 72}, {300, 768}}) {
    const std::string shape = "_" + std::to_string(N) + "x" + std::to_string(C);
    const float eps = 1e-5f;
    Floats x = rng.normal(N * C, 2);
    for (float& v : x) v += 0.5f;
    x = rounded(x, dtype);
    push(
        "layernorm_forward" + shape,
        {output({N, C}), stats_out({N}), stats_out({N}), input({N, C}, x), input({C}, rng.uniform(C, 0.5, 1.5), 1),
         input({C}, rng.normal(C))},
        [eps](Backend& b, const Tensors& t) { b.layernorm_forward(t[0], t[1], t[2], t[3], t[4], t[5], eps); },
        tol({1e-5, 1e-5}));
    Floats mean, rstd;
    row_statistics(x, N, C, eps, &mean, &rstd);
    push(
        "layernorm_backward" + shape,
        {in_out({N, C}, rng.normal(N * C)), grad({C}, rng.normal(C), 3), grad({C}, rng.normal(C)),
         input({N, C}, rng.normal(N * C)), input({N, C}, x), input({C}, rng.uniform(C, 0.5, 1.5)), stats({N}, mean),
         stats({N}, rstd)},
        [](Backend& b, const Tensors& t) { b.layernorm_backward(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]); },
        tol({1e-4, 1e-5}));
    // residual_out, out, mean, rstd, a, b, weight, bias.
    const auto fused = [eps](Backend& b, const Tensors& t) {
      b.residual_layernorm_forward(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], eps);
    };
    push("residual_layernorm_forward" + shape,
         {output({N, C}), output({N, C}), stats_out({N}), stats_out({N}), input({N, C}, rng.normal(N * C, 2)),
          input({N, C}, rng.normal(N * C)), input({C}, rng.uniform(C, 0.5, 1.5), 1), input({C}, rng.normal(C))},
         fused, tol({1e-5, 1e-5}));
    // residual_out aliasing a (the residual stream updated in place) and aliasing b.
    const auto fused_into_a = [eps](Backend& b, const Tensors& t) {
      b.residual_layernorm_forward(t[0], t[1], t[2], t[3], t[0], t[4], t[5], t[6], eps);
    };
    push("residual_layernorm_forward_in_place_a" + shape,
         {in_out({N, C}, rng.normal(N * C, 2)), output({N, C}), stats_out({N}), stats_out({N}),
          input({N, C}, rng.normal(N * C)), input({C}, rng.uniform(C, 0.5, 1.5)), input({C}, rng.normal(C))},
         fused_into_a, tol({1e-5, 1e-5}));
    const auto fused_into_b = [eps](Backend& b, const Tensors& t) {
      b.residual_layernorm_forward(t[0], t[1], t[2], t[3], t[4], t[0], t[5], t[6], eps);
    };
    push("residual_layernorm_forward_in_place_b" + shape,
         {in_out({N, C}, rng.normal(N * C)), output({N, C}), stats_out({N}), stats_out({N}),
          input({N, C}, rng.normal(N * C, 2)), input({C}, rng.uniform(C, 0.5, 1.5)), input({C}, rng.normal(C))},
         fused_into_b, tol({1e-5, 1e-5}));
  }

  // RMSNorm and residual + RMSNorm: (N, C).
  for (const auto& [N, C] : {std::pair<int64_t, int64_t>{1, 1}, {9, 67}, {37, 72}, {300, 768}}) {
    const std::string shape = "_" + std::to_string(N) + "x" + std::to_string(C);
    const float eps = 1e-5f;
    const Floats x = rounded(rng.normal(N * C, 2), dtype);
    push(
        "rmsnorm_forward" + shape,
        {output({N, C}), stats_out({N}), input({N, C}, x), input({C}, rng.uniform(C, 0.5, 1.5), 1)},
        [eps](Backend& b, const Tensors& t) { b.rmsnorm_forward(t[0], t[1], t[2], t[3], eps); }, tol({1e-5, 1e-5}));
    Floats rstd(N);
    for (int64_t r = 0; r < N; ++r) {
      double sum_squares = 0;
      for (int64_t j = 0; j < C; ++j) sum_squares += static_cast<double>(x[r * C + j]) * x[r * C + j];
      rstd[r] = static_cast<float>(1 / std::sqrt(sum_squares / static_cast<double>(C) + eps));
    }
    push(
        "rmsnorm_backward" + shape,
        {in_out({N, C}, rng.normal(N * C)), grad({C}, rng.normal(C), 3), input({N, C}, rng.normal(N * C)),
         input({N, C}, x), input({C}, rng.uniform(C, 0.5, 1.5)), stats({N}, rstd)},
        [](Backend& b, const Tensors& t) { b.rmsnorm_backward(t[0], t[1], t[2], t[3], t[4], t[5]); },
        tol({1e-4, 1e-5}));
    // residual_out, out, rstd, a, b, weight; then residual_out aliasing a (the residual stream updated in place).
    push(
        "residual_rmsnorm_forward" + shape,
        {output({N, C}), output({N, C}), stats_out({N}), input({N, C}, rng.normal(N * C, 2)),
         input({N, C}, rng.normal(N * C)), input({C}, rng.uniform(C, 0.5, 1.5), 1)},
        [eps](Backend& b, const Tensors& t) { b.residual_rmsnorm_forward(t[0], t[1], t[2], t[3], t[4], t[5], eps); },
        tol({1e-5, 1e-5}));
    push(
        "residual_rmsnorm_forward_in_place_a" + shape,
        {in_out({N, C}, rng.normal(N * C, 2)), output({N, C}), stats_out({N}), input({N, C}, rng.normal(N * C)),
         input({C}, rng.uniform(C, 0.5, 1.5))},
        [eps](Backend& b, const Tensors& t) { b.residual_rmsnorm_forward(t[0], t[1], t[2], t[0], t[3], t[4], eps); },
        tol({1e-5, 1e-5}));
  }

  // SwiGLU over gate_up[N, 2F]: (N, F).
  for (const auto& [N, F] : {std::pair<int64_t, int64_t>{1, 1}, {7, 45}, {37, 344}}) {
    const std::string shape = "_" + std::to_string(N) + "x" + std::to_string(F);
    push(
        "swiglu_forward" + shape, {output({N, F}), input({N, 2 * F}, rng.normal(N * 2 * F, 3), 1)},
        [](Backend& b, const Tensors& t) { b.swiglu_forward(t[0], t[1]); }, tol({1e-5, 1e-6}));
    push(
        "swiglu_backward" + shape,
        {output({N, 2 * F}), input({N, F}, rng.normal(N * F)), input({N, 2 * F}, rng.normal(N * 2 * F, 3))},
        [](Backend& b, const Tensors& t) { b.swiglu_backward(t[0], t[1], t[2]); }, tol({1e-5, 1e-6}));
  }

  // Attention and RoPE over the packed qkv[B, T, (H + 2*KV)*hs]: (B, T, H, KV, hs). Head sizes 24 and 128 (the
  // kernel's largest); T = 37 and 70 span partial tiles; KV == H is multi-head attention, KV < H grouped-query
  // (a Llama-1B-like 32/8 among them, which cuDNN takes in bf16).
  struct AttentionShape {
    int64_t B, T, H, KV, hs;
  };
  for (const AttentionShape& s :
       {AttentionShape{1, 1, 1, 1, 4}, AttentionShape{2, 13, 3, 3, 8}, AttentionShape{1, 64, 4, 4, 16},
        AttentionShape{2, 37, 3, 3, 24}, AttentionShape{1, 70, 2, 2, 128}, AttentionShape{2, 13, 3, 1, 8},
        AttentionShape{2, 37, 6, 2, 24}, AttentionShape{1, 70, 4, 1, 128}, AttentionShape{1, 64, 32, 8, 64}}) {
    std::string shape =
        "_" + std::to_string(s.B) + "x" + std::to_string(s.T) + "x" + std::to_string(s.H) + "x" + std::to_string(s.hs);
    if (s.KV != s.H) shape += "_kv" + std::to_string(s.KV);
    const int64_t C = s.H * s.hs, W = (s.H + 2 * s.KV) * s.hs;
    const int n_head = static_cast<int>(s.H), n_kv_head = static_cast<int>(s.KV);
    const Floats qkv = rounded(rng.normal(s.B * s.T * W), dtype);
    // The reference follows the engine that ran (Note [bf16 attention references] in attention_reference.h):
    // Tessera's kernels keep P in f32 like CpuBackend; cuDNN rounds P (and dS) to bf16, which the host model
    // repeats, within the plain bf16 tolerance plus the model's derived slack.
    const int64_t B = s.B, T = s.T, H = s.H, KV = s.KV, hs = s.hs;
    push(
        "attention_forward" + shape, {output({s.B, s.T, C}), stats_out({s.B, s.H, s.T}), input({s.B, s.T, W}, qkv)},
        [n_head, n_kv_head](Backend& b, const Tensors& t) { b.attention_forward(t[0], t[1], t[2], n_head, n_kv_head); },
        tol({1e-5, 1e-6}));
    if (bf16) {
      Floats model_out, model_lse, slack;
      testing::attention_forward_reference(qkv, B, T, H, KV, hs, testing::AttentionRounding::kCudnn, &model_out,
                                           &model_lse, &slack);
      const Tolerance tolerance = cases.back().tolerance;
      cases.back().check = [=](const GpuPath& path) {
        if (path.attention_engine != "cudnn") return Check{"Tessera's attention kernels (f32 P)", tolerance, {}, {}};
        return Check{"cuDNN (P rounded to bf16: host model)",
                     tolerance,
                     [=](Backend& b, const Tensors& t) {
                       upload(b, t[0], model_out);
                       upload(b, t[1], model_lse);
                     },
                     {slack, {}}};
      };
    }
    // The backward from the same forward results on both backends: out and lse computed on the host.
    Floats out, lse;
    testing::attention_forward_reference(qkv, B, T, H, KV, hs, testing::AttentionRounding::kF32Probabilities, &out,
                                         &lse, nullptr);
    out = rounded(out, dtype);
    const Floats d_out = rounded(rng.normal(s.B * s.T * C), dtype);
    push(
        "attention_backward" + shape,
        {output({s.B, s.T, W}), input({s.B, s.T, C}, d_out), input({s.B, s.T, W}, qkv), input({s.B, s.T, C}, out),
         stats({s.B, s.H, s.T}, lse)},
        [n_head, n_kv_head](Backend& b, const Tensors& t) {
          b.attention_backward(t[0], t[1], t[2], t[3], t[4], n_head, n_kv_head);
        },
        tol({1e-4, 1e-5}));
    if (bf16) {
      Floats model_d_qkv, slack;
      testing::attention_backward_reference(d_out, qkv, out, lse, B, T, H, KV, hs, testing::AttentionRounding::kCudnn,
                                            &model_d_qkv, &slack);
      const Tolerance tolerance = cases.back().tolerance;
      cases.back().check = [=](const GpuPath& path) {
        if (path.attention_engine != "cudnn") return Check{"Tessera's attention kernels (f32 P)", tolerance, {}, {}};
        return Check{"cuDNN (P and dS rounded to bf16: host model)",
                     tolerance,
                     [=](Backend& b, const Tensors& t) { upload(b, t[0], model_d_qkv); },
                     {slack}};
      };
    }
    if (s.hs % 2 != 0) continue;
    // RoPE in place; positions i % seq_len with two sequences per batch row where T allows.
    const int seq_len = static_cast<int>(s.T % 2 == 0 ? s.T / 2 : s.T);
    push(
        "rope_forward" + shape, {in_out({s.B, s.T, W}, qkv, 1)},
        [n_head, n_kv_head, seq_len](Backend& b, const Tensors& t) {
          b.rope_forward(t[0], n_head, n_kv_head, seq_len, 10000.0f);
        },
        tol({1e-6, 1e-6}));
    push(
        "rope_backward" + shape, {in_out({s.B, s.T, W}, rng.normal(s.B * s.T * W))},
        [n_head, n_kv_head, seq_len](Backend& b, const Tensors& t) {
          b.rope_backward(t[0], n_head, n_kv_head, seq_len, 500000.0f);
        },
        tol({1e-6, 1e-6}));
    push(
        "rope_forward_at" + shape, {in_out({s.B, s.T, W}, qkv, 1)},
        [n_head, n_kv_head, seq_len](Backend& b, const Tensors& t) {
          b.rope_forward_at(t[0], n_head, n_kv_head, seq_len, 1000, 10000.0f);
        },
        tol({1e-6, 1e-6}));
    // Cached attention: the last Tq tokens over caches of T + 2 rows holding the first T - Tq.
    const int64_t Tq = std::min<int64_t>(3, s.T), kv = s.KV * s.hs, cache_rows = s.T + 2;
    const int position = static_cast<int>(s.T - Tq);
    push(
        "cached_attention_forward" + shape,
        {output({s.B, Tq, C}), input({s.B, Tq, W}, rounded(rng.normal(s.B * Tq * W), dtype)),
         in_out({s.B, cache_rows, s.KV, s.hs}, rounded(rng.normal(s.B * cache_rows * kv), dtype)),
         in_out({s.B, cache_rows, s.KV, s.hs}, rounded(rng.normal(s.B * cache_rows * kv), dtype))},
        [n_head, n_kv_head, position](Backend& b, const Tensors& t) {
          b.cached_attention_forward(t[0], t[1], t[2], t[3], n_head, n_kv_head, position);
        },
        tol({1e-5, 1e-6}));
  }

  // Embeddings: a vocabulary shard of V_local rows starting at vocab_start; tokens inside and outside it,
  // repeated.
  {
    const int64_t B = 3, T = 7, N = B * T, C = 19, V_local = 11, vocab_start = 5;
    const int seq_len = static_cast<int>(T);
    Ints ids = rng.integers(N, 0, 20);
    ids[4] = ids[9] = ids[17] = 7;  // one token three times
    const auto forward = [seq_len](Backend& b, const Tensors& t) {
      b.embedding_forward(t[0], t[1], t[2], t[3], seq_len, vocab_start);
    };
    push("embedding_forward",
         {output({N, C}), tokens({N}, ids), input({V_local, C}, rng.normal(V_local * C), 2),
          input({T, C}, rng.normal(T * C))},
         forward, tol(kFp32));
    push("embedding_forward_no_positions",
         {output({N, C}), tokens({N}, ids), input({V_local, C}, rng.normal(V_local * C)), none()}, forward, tol(kFp32));
    const auto backward = [seq_len](Backend& b, const Tensors& t) {
      b.embedding_backward(t[0], t[1], t[2], t[3], seq_len, vocab_start);
    };
    push("embedding_backward",
         {grad({V_local, C}, rng.normal(V_local * C), 1), grad({T, C}, rng.normal(T * C)),
          input({N, C}, rng.normal(N * C)), tokens({N}, ids)},
         backward, tol(kFp32));
    push("embedding_backward_no_positions",
         {grad({V_local, C}, rng.normal(V_local * C)), none(), input({N, C}, rng.normal(N * C)), tokens({N}, ids)},
         backward, tol(kFp32));
  }
  // A longer batch with a skewed token distribution (runs of many equal tokens, most of the vocabulary absent).
  {
    const int64_t B = 4, T = 129, N = B * T, C = 72, V_local = 1000, vocab_start = 0;
    const int seq_len = static_cast<int>(T);
    Ints ids = rng.integers(N, 0, 1200);
    for (int64_t i = 0; i < N; i += 3) ids[i] = 17;
    push(
        "embedding_backward_skewed",
        {grad({V_local, C}, rng.normal(V_local * C)), grad({T, C}, rng.normal(T * C)), input({N, C}, rng.normal(N * C)),
         tokens({N}, ids)},
        [seq_len](Backend& b, const Tensors& t) { b.embedding_backward(t[0], t[1], t[2], t[3], seq_len, vocab_start); },
        tol({1e-5, 1e-5}));
  }

  // Cross-entropy over a vocabulary shard [vocab_start, vocab_start + V) with padding from column `valid` on.
  struct VocabShape {
    int64_t N, V, valid, vocab_start;
  };
  for (const VocabShape& s : {VocabShape{11, 50, 47, 100}, VocabShape{4, 5003, 5000, 0}, VocabShape{3, 8, 0, 16},
                              VocabShape{37, 1000, 997, 0}}) {
    const std::string shape =
        "_" + std::to_string(s.N) + "x" + std::to_string(s.V) + "_valid" + std::to_string(s.valid);
    const Floats logits = rounded(rng.normal(s.N * s.V, 3), dtype);
    // Targets below, inside, in the padding of, and above the shard.
    Ints targets =
        rng.integers(s.N, static_cast<int32_t>(s.vocab_start - 10), static_cast<int32_t>(s.vocab_start + s.V + 10));
    Floats row_max, sum_exp, target_logit;
    logit_statistics(logits, targets, s.N, s.V, s.valid, s.vocab_start, &row_max, &sum_exp, &target_logit);
    const int64_t valid = s.valid, vocab_start = s.vocab_start;
    push(
        "cross_entropy_row_max" + shape, {stats_out({s.N}), input({s.N, s.V}, logits)},
        [valid](Backend& b, const Tensors& t) { b.cross_entropy_row_max(t[0], t[1], valid); }, kFp32);
    if (s.valid == 0) continue;  // no softmax over an empty shard
    push(
        "cross_entropy_row_stats" + shape,
        {stats_out({s.N}), stats_out({s.N}), input({s.N, s.V}, logits), stats({s.N}, row_max), tokens({s.N}, targets)},
        [valid, vocab_start](Backend& b, const Tensors& t) {
          b.cross_entropy_row_stats(t[0], t[1], t[2], t[3], t[4], vocab_start, valid);
        },
        kFp32);
    // The gradients are about 1/44 of a probability: an absolute floor far below their size.
    push(
        "cross_entropy_loss_backward" + shape,
        {stats_out({s.N}), in_out({s.N, s.V}, logits), stats({s.N}, row_max), stats({s.N}, sum_exp),
         stats({s.N}, target_logit), tokens({s.N}, targets)},
        [valid, vocab_start](Backend& b, const Tensors& t) {
          b.cross_entropy_loss_backward(t[0], t[1], t[2], t[3], t[4], t[5], Tensor(), vocab_start, valid, 1.0f / 44.0f);
        },
        tol(kFp32, 1e-6));
    // Per-token weights (a 0/1 loss mask with one fractional weight): masked rows are exactly zero.
    Floats weights(s.N);
    for (int64_t n = 0; n < s.N; ++n) weights[n] = n % 3 == 0 ? 0.0f : n % 4 == 1 ? 0.5f : 1.0f;
    push(
        "cross_entropy_loss_backward_weighted" + shape,
        {stats_out({s.N}), in_out({s.N, s.V}, logits), stats({s.N}, row_max), stats({s.N}, sum_exp),
         stats({s.N}, target_logit), tokens({s.N}, targets), stats({s.N}, weights)},
        [valid, vocab_start](Backend& b, const Tensors& t) {
          b.cross_entropy_loss_backward(t[0], t[1], t[2], t[3], t[4], t[5], t[6], vocab_start, valid, 1.0f / 44.0f);
        },
        tol(kFp32, 1e-6));
  }
}

std::vector<Case> make_cases() {
  Rng rng(20250101);
  std::vector<Case> cases;
  add_fixed_dtype_cases(rng, cases);
  add_compute_cases(rng, DType::kF32, cases);
  add_compute_cases(rng, DType::kBF16, cases);
  return cases;
}

const std::vector<Case>& cases() {
  static const std::vector<Case> all = make_cases();
  return all;
}

// Which GELU cuBLASLt's epilogue computes (Note [GELU epilogue]): the largest distance of its output from
// each form, evaluated on its own pre-activation.
void report_gelu_form(const Case& c, const std::vector<std::byte>& out, const std::vector<std::byte>& pre) {
  const bool bf16 = c.compute == DType::kBF16;
  const size_t n = out.size() / (bf16 ? 2 : 4);
  const auto value = [bf16](const std::vector<std::byte>& bytes, size_t i) {
    if (bf16) {
      uint16_t h = 0;
      std::memcpy(&h, &bytes[2 * i], 2);
      return static_cast<double>(bf16_to_f32(h));
    }
    float f = 0;
    std::memcpy(&f, &bytes[4 * i], 4);
    return static_cast<double>(f);
  };
  double to_tanh = 0, to_erf = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = value(pre, i), y = value(out, i);
    to_tanh = std::max(to_tanh, std::abs(y - gelu_tanh(x)));
    to_erf = std::max(to_erf, std::abs(y - gelu_erf(x)));
  }
  std::printf(
      "[   PATH   ] %s: GELU epilogue output vs its pre-activation: max |diff| %.3g from tanh-GELU, %.3g "
      "from erf-GELU\n",
      c.name.c_str(), to_tanh, to_erf);
}

// ---- fixtures -----------------------------------------------------------------------------------------------------

// One CudaBackend for the whole binary, released before exit (while the CUDA runtime is still up).
std::unique_ptr<CudaBackend>& shared_gpu() {
  static std::unique_ptr<CudaBackend> backend;
  return backend;
}

class ReleaseGpu : public ::testing::Environment {
 public:
  void TearDown() override { shared_gpu().reset(); }
};
::testing::Environment* const release_gpu = ::testing::AddGlobalTestEnvironment(new ReleaseGpu);

class CudaBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA GPU visible";
    if (!shared_gpu()) shared_gpu() = std::make_unique<CudaBackend>(0);
    gpu_ = shared_gpu().get();
  }
  static CpuBackend& cpu() {
    static CpuBackend backend(2);
    return backend;
  }
  CudaBackend* gpu_ = nullptr;
};

class CudaParityTest : public CudaBackendTest, public ::testing::WithParamInterface<size_t> {};

// The GPU runs first: for ops with several paths, the one it took picks the reference and tolerance.
TEST_P(CudaParityTest, MatchesCpuBackend) {
  const Case& c = cases()[GetParam()];
  const int64_t gelu_before = gpu_->gemm().epilogues_taken(cuda::GemmEpilogue::kGeluBias);
  const auto got = run_case(*gpu_, c, nullptr);
  const GpuPath path{gpu_->attention_engine(),
                     gpu_->gemm().epilogues_taken(cuda::GemmEpilogue::kGeluBias) > gelu_before};
  const Check check = c.check ? c.check(path) : Check{"", c.tolerance, nullptr, {}};
  if (!check.path.empty()) {
    std::printf("[   PATH   ] %s: %s\n", c.name.c_str(), check.path.c_str());
    RecordProperty("path", check.path);
  }
  const auto want = run_case(cpu(), c, check.reference);
  ASSERT_EQ(got.size(), want.size());
  size_t compared = 0;
  for (size_t a = 0; a < c.args.size(); ++a) {
    const Arg& arg = c.args[a];
    if (arg.role != Role::kOutput && arg.role != Role::kInOut) continue;
    const DType dtype = dtype_of(arg, c);
    const Floats no_slack;
    const Floats& slack = compared < check.slack.size() ? check.slack[compared] : no_slack;
    EXPECT_TRUE(all_close(got[compared], want[compared], dtype, tolerance_for(dtype, check.tolerance), slack))
        << c.name << ", argument " << a << (check.path.empty() ? "" : ", path: " + check.path);
    ++compared;
  }
  if (path.gelu_epilogue && got.size() == 2) report_gelu_form(c, got[0], got[1]);
}

INSTANTIATE_TEST_SUITE_P(Ops, CudaParityTest, ::testing::Range<size_t>(0, cases().size()),
                         [](const ::testing::TestParamInfo<size_t>& info) { return cases()[info.param].name; });

TEST_F(CudaBackendTest, SumOfSquaresMatchesCpu) {
  Rng rng(7);
  for (int64_t n : {1, 255, 100003}) {
    const Floats x = rng.normal(n);
    Buffer cpu_buffer = cpu().allocate(n * sizeof(float));
    Buffer gpu_buffer = gpu_->allocate((n + 1) * sizeof(float));
    Tensor on_cpu = cpu_buffer.tensor(0, DType::kF32, {n});
    Tensor on_gpu = gpu_buffer.tensor(sizeof(float), DType::kF32, {n});  // unaligned by one element
    cpu().copy_from_host(on_cpu, x.data());
    gpu_->copy_from_host(on_gpu, x.data());
    const double want = cpu().sum_of_squares(on_cpu);
    EXPECT_NEAR(gpu_->sum_of_squares(on_gpu), want, 1e-12 * want) << "n = " << n;
  }
}

// The batched form: the same values as one call per tensor (f32 gradients and a bf16 tensor), one wait.
TEST_F(CudaBackendTest, SumOfSquaresManyMatchesOneByOne) {
  Rng rng(11);
  const std::vector<int64_t> sizes = {1, 255, 100003, 4099, 70000};
  std::vector<Buffer> buffers;
  std::vector<Tensor> tensors;
  std::vector<double> want;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int64_t n = sizes[i];
    const bool bf16 = i == 3;
    Floats x = rounded(rng.normal(n), bf16 ? DType::kBF16 : DType::kF32);
    double sum = 0;
    for (float v : x) sum += static_cast<double>(v) * v;
    want.push_back(sum);
    buffers.push_back(gpu_->allocate((n + 1) * 4));
    Tensor t = buffers.back().tensor(bf16 ? 2 : 4, bf16 ? DType::kBF16 : DType::kF32, {n});  // unaligned views
    if (bf16) {
      std::vector<uint16_t> halves(x.size());
      for (size_t e = 0; e < x.size(); ++e) halves[e] = f32_to_bf16(x[e]);
      gpu_->copy_from_host(t, halves.data());
    } else {
      gpu_->copy_from_host(t, x.data());
    }
    tensors.push_back(t);
  }
  std::vector<double> sums(sizes.size(), -1.0);
  gpu_->sum_of_squares_many(tensors.data(), static_cast<int>(tensors.size()), sums.data());
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_NEAR(sums[i], want[i], 1e-12 * want[i]) << "n = " << sizes[i];
    EXPECT_EQ(sums[i], gpu_->sum_of_squares(tensors[i])) << "n = " << sizes[i];
  }
  // More tensors than the pinned staging memory held so far.
  std::vector<Tensor> many(200, tensors[1]);
  std::vector<double> many_sums(many.size(), -1.0);
  gpu_->sum_of_squares_many(many.data(), static_cast<int>(many.size()), many_sums.data());
  for (double s : many_sums) EXPECT_EQ(s, sums[1]);
}

// Attention's fallback kernel refuses head sizes it was not written for, with a message.
TEST_F(CudaBackendTest, AttentionRefusesHeadsLargerThan128) {
  const int64_t B = 1, T = 2, H = 1, hs = 136;
  Buffer buffer = gpu_->allocate((B * T * 4 * H * hs + B * H * T) * sizeof(float));
  Tensor qkv = buffer.tensor(0, DType::kF32, {B, T, 3 * H * hs});
  Tensor out = buffer.tensor(qkv.bytes(), DType::kF32, {B, T, H * hs});
  Tensor lse = buffer.tensor(qkv.bytes() + out.bytes(), DType::kF32, {B, H, T});
  EXPECT_THROW(gpu_->attention_forward(out, lse, qkv, static_cast<int>(H), static_cast<int>(H)), ConfigError);
}

// Compute tensors of one op share a dtype; statistics are f32.
TEST_F(CudaBackendTest, RejectsMixedComputeDtypes) {
  Buffer buffer = gpu_->allocate(4096);
  Tensor a = buffer.tensor(0, DType::kF32, {16});
  Tensor b = buffer.tensor(64, DType::kBF16, {16});
  Tensor c = buffer.tensor(128, DType::kF32, {16});
  EXPECT_THROW(gpu_->add(c, a, b), InternalError);
  Tensor mean = buffer.tensor(256, DType::kBF16, {1});
  Tensor rstd = buffer.tensor(320, DType::kF32, {1});
  Tensor x = buffer.tensor(384, DType::kBF16, {1, 16});
  Tensor y = buffer.tensor(448, DType::kBF16, {1, 16});
  Tensor w = buffer.tensor(512, DType::kBF16, {16});
  EXPECT_THROW(gpu_->layernorm_forward(y, mean, rstd, x, w, w, 1e-5f), InternalError);
}

TEST_F(CudaBackendTest, CopiesRoundTripThroughTheDevice) {
  const Ints values = Rng(3).integers(4099, -1000, 1000);
  Buffer buffer = gpu_->allocate(2 * values.size() * sizeof(int32_t));
  const int64_t n = std::ssize(values);
  Tensor a = buffer.tensor(0, DType::kI32, {n});
  Tensor b = buffer.tensor(n * sizeof(int32_t), DType::kI32, {n});
  gpu_->copy_from_host(a, values.data());
  gpu_->copy(b, a);
  Ints back(values.size(), 0);
  gpu_->copy_to_host(back.data(), b);
  EXPECT_EQ(back, values);
}

TEST_F(CudaBackendTest, WarmAllocatorServesRepeatedSizesFromItsCache) {
  // A "step" that allocates and frees the same sizes twice: the second time needs no cudaMalloc.
  const auto step = [this] {
    for (size_t bytes : {size_t{100}, size_t{4096}, size_t{3} << 20}) Buffer b = gpu_->allocate(bytes);
  };
  step();
  const auto before = gpu_->memory_stats();
  step();
  const auto after = gpu_->memory_stats();
  EXPECT_EQ(after.device_allocations, before.device_allocations);
  EXPECT_EQ(after.cache_hits, before.cache_hits + 3);
}

TEST_F(CudaBackendTest, RejectsHostTensors) {
  float host[4] = {1, 2, 3, 4};
  Tensor t(host, DType::kF32, Device::kCpu, {4});
  EXPECT_THROW(gpu_->scale(t, 2.0f), InternalError);
}

}  // namespace
}  // namespace tessera

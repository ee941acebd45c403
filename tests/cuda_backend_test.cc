// Table-driven parity of every CudaBackend op with CpuBackend, the reference (whose own correctness
// kernels_test proves against double-precision math).
//
// Each case lists its tensors with a role: inputs get fresh random values; outputs the contract calls
// "overwrites" are poisoned (NaN, or INT32_MIN for integers) before the call on both backends, so an element the
// GPU skips fails the comparison; outputs that accumulate, and tensors updated in place, start from the same
// random values on both. Shapes are odd on purpose (not multiples of warps, tiles or vector widths), and some
// tensors sit at unaligned offsets of their buffers, as views into flat parameter buffers do. Tolerances are
// fp32's: the two backends sum in different orders.
//
// Labelled `gpu`: every test skips itself when cudaGetDeviceCount reports no GPU.
#include "kernels/cuda/cuda_backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
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
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/device.h"

namespace tessera {
namespace {

using Floats = std::vector<float>;
using Ints = std::vector<int32_t>;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int32_t kIntPoison = std::numeric_limits<int32_t>::min();

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
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  Floats f;            // f32 values of inputs and in-out tensors
  Ints i;              // i32 values of inputs
  int64_t offset = 0;  // elements between the buffer's start and the tensor: unaligned views
};

struct Tolerance {
  double rtol;
  double atol;
};
constexpr Tolerance kFp32{1e-5, 1e-6};

struct Case {
  std::string name;
  std::vector<Arg> args;
  std::function<void(Backend&, const std::vector<Tensor>&)> op;
  Tolerance tolerance = kFp32;
};

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Arg input(std::vector<int64_t> shape, Floats values, int64_t offset = 0) {
  return Arg{Role::kInput, DType::kF32, std::move(shape), std::move(values), {}, offset};
}
Arg tokens(std::vector<int64_t> shape, Ints values) {
  return Arg{Role::kInput, DType::kI32, std::move(shape), {}, std::move(values), 0};
}
Arg output(std::vector<int64_t> shape, DType dtype = DType::kF32) {
  return Arg{Role::kOutput, dtype, std::move(shape), {}, {}, 0};
}
Arg in_out(std::vector<int64_t> shape, Floats values, int64_t offset = 0) {
  return Arg{Role::kInOut, DType::kF32, std::move(shape), std::move(values), {}, offset};
}
Arg scratch(std::vector<int64_t> shape) { return Arg{Role::kScratch, DType::kF32, std::move(shape), {}, {}, 0}; }
Arg none() { return Arg{Role::kNone, DType::kF32, {1}, {}, {}, 0}; }

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
std::vector<std::vector<std::byte>> run_case(Backend& backend, const Case& c) {
  std::vector<Buffer> buffers;
  std::vector<Tensor> tensors;
  for (const Arg& arg : c.args) {
    if (arg.role == Role::kNone) {
      tensors.emplace_back();
      continue;
    }
    const int64_t n = numel(arg.shape);
    const size_t element = dtype_size(arg.dtype);
    buffers.push_back(backend.allocate(static_cast<size_t>(arg.offset + n) * element));
    Tensor t = make_tensor(static_cast<char*>(buffers.back().data()) + arg.offset * element, arg.dtype,
                           backend.device(), arg.shape);
    if (arg.dtype == DType::kI32) {
      Ints values = arg.role == Role::kInput ? arg.i : Ints(n, kIntPoison);
      backend.copy_from_host(t, values.data());
    } else {
      const bool poisoned = arg.role == Role::kOutput || arg.role == Role::kScratch;
      Floats values = poisoned ? Floats(n, kNaN) : arg.f;
      EXPECT_EQ(std::ssize(values), n) << c.name << ": values do not match the shape";
      backend.copy_from_host(t, values.data());
    }
    tensors.push_back(t);
  }
  c.op(backend, tensors);
  std::vector<std::vector<std::byte>> results;
  for (size_t a = 0; a < c.args.size(); ++a) {
    if (c.args[a].role != Role::kOutput && c.args[a].role != Role::kInOut) continue;
    std::vector<std::byte> bytes(tensors[a].bytes());
    backend.copy_to_host(bytes.data(), tensors[a]);
    results.push_back(std::move(bytes));
  }
  return results;
}

::testing::AssertionResult all_close(const std::vector<std::byte>& got_bytes, const std::vector<std::byte>& want_bytes,
                                     DType dtype, Tolerance tolerance) {
  const size_t n = want_bytes.size() / 4;
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
      std::memcpy(&g, &got_bytes[4 * i], 4);
      std::memcpy(&w, &want_bytes[4 * i], 4);
      ok = g == w || std::abs(static_cast<double>(g) - w) <= tolerance.atol + tolerance.rtol * std::abs(w);
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

// ---- the cases --------------------------------------------------------------------------------------------------

std::vector<Case> make_cases() {
  Rng rng(20250101);
  std::vector<Case> cases;

  // Memory and elementwise ops.
  cases.push_back({"fill_f32", {output({1001})}, [](Backend& b, const std::vector<Tensor>& t) { b.fill(t[0], 3.5f); }});
  cases.push_back(
      {"fill_i32", {output({37}, DType::kI32)}, [](Backend& b, const std::vector<Tensor>& t) { b.fill(t[0], 7.0f); }});
  cases.push_back({"copy",
                   {output({517}), input({517}, rng.normal(517), 3)},
                   [](Backend& b, const std::vector<Tensor>& t) { b.copy(t[0], t[1]); }});
  cases.push_back({"add",
                   {output({3, 337}), input({3, 337}, rng.normal(1011)), input({3, 337}, rng.normal(1011))},
                   [](Backend& b, const std::vector<Tensor>& t) { b.add(t[0], t[1], t[2]); }});
  cases.push_back({"add_in_place",
                   {in_out({1011}, rng.normal(1011)), input({1011}, rng.normal(1011))},
                   [](Backend& b, const std::vector<Tensor>& t) { b.add(t[0], t[0], t[1]); }});
  cases.push_back({"scale", {in_out({999}, rng.normal(999), 1)}, [](Backend& b, const std::vector<Tensor>& t) {
                     b.scale(t[0], -0.37f);
                   }});
  cases.push_back({"gelu_forward",
                   {output({7, 143}), input({7, 143}, rng.normal(1001, 2))},
                   [](Backend& b, const std::vector<Tensor>& t) { b.gelu_forward(t[0], t[1]); }});
  cases.push_back({"gelu_backward",
                   {output({1001}), input({1001}, rng.normal(1001, 2)), input({1001}, rng.normal(1001))},
                   [](Backend& b, const std::vector<Tensor>& t) { b.gelu_backward(t[0], t[1], t[2]); }});
  cases.push_back({"gelu_backward_in_place",
                   {input({1001}, rng.normal(1001, 2)), in_out({1001}, rng.normal(1001))},
                   [](Backend& b, const std::vector<Tensor>& t) { b.gelu_backward(t[1], t[0], t[1]); }});

  // Linear layers: (N, C, OC); tolerances grow with the reduction length.
  struct MatmulShape {
    int64_t N, C, OC;
    Tolerance tolerance;
  };
  for (const MatmulShape& s : {MatmulShape{1, 1, 1, kFp32}, MatmulShape{7, 13, 37, kFp32},
                               MatmulShape{65, 129, 211, {1e-4, 1e-5}}, MatmulShape{128, 768, 333, {1e-4, 1e-4}}}) {
    const std::string shape = std::to_string(s.N) + "x" + std::to_string(s.C) + "x" + std::to_string(s.OC);
    const auto forward = [](Backend& b, const std::vector<Tensor>& t) { b.matmul_forward(t[0], t[1], t[2], t[3]); };
    cases.push_back({"matmul_forward_" + shape,
                     {output({s.N, s.OC}), input({s.N, s.C}, rng.normal(s.N * s.C)),
                      input({s.OC, s.C}, rng.normal(s.OC * s.C, 0.1)), input({s.OC}, rng.normal(s.OC))},
                     forward,
                     s.tolerance});
    cases.push_back({"matmul_forward_no_bias_" + shape,
                     {output({s.N, s.OC}), input({s.N, s.C}, rng.normal(s.N * s.C)),
                      input({s.OC, s.C}, rng.normal(s.OC * s.C, 0.1)), none()},
                     forward,
                     s.tolerance});
    // Parameters at odd offsets of a flat buffer, as in the model (the bias epilogue may not take them).
    cases.push_back({"matmul_forward_unaligned_" + shape,
                     {output({s.N, s.OC}), input({s.N, s.C}, rng.normal(s.N * s.C)),
                      input({s.OC, s.C}, rng.normal(s.OC * s.C, 0.1), 3), input({s.OC}, rng.normal(s.OC), 1)},
                     forward,
                     s.tolerance});
    const auto backward = [](Backend& b, const std::vector<Tensor>& t) {
      b.matmul_backward(t[0], t[1], t[2], t[3], t[4], t[5]);
    };
    cases.push_back({"matmul_backward_" + shape,
                     {output({s.N, s.C}), in_out({s.OC, s.C}, rng.normal(s.OC * s.C)), in_out({s.OC}, rng.normal(s.OC)),
                      input({s.N, s.OC}, rng.normal(s.N * s.OC)), input({s.N, s.C}, rng.normal(s.N * s.C)),
                      input({s.OC, s.C}, rng.normal(s.OC * s.C, 0.1))},
                     backward,
                     s.tolerance});
    cases.push_back(
        {"matmul_backward_weight_only_" + shape,
         {none(), in_out({s.OC, s.C}, rng.normal(s.OC * s.C), 5), none(), input({s.N, s.OC}, rng.normal(s.N * s.OC)),
          input({s.N, s.C}, rng.normal(s.N * s.C)), input({s.OC, s.C}, rng.normal(s.OC * s.C, 0.1))},
         backward,
         s.tolerance});
    cases.push_back({"matmul_backward_unaligned_bias_" + shape,
                     {output({s.N, s.C}), in_out({s.OC, s.C}, rng.normal(s.OC * s.C), 1),
                      in_out({s.OC}, rng.normal(s.OC), 7), input({s.N, s.OC}, rng.normal(s.N * s.OC)),
                      input({s.N, s.C}, rng.normal(s.N * s.C)), input({s.OC, s.C}, rng.normal(s.OC * s.C, 0.1))},
                     backward,
                     s.tolerance});
  }

  // LayerNorm: (N, C).
  for (const auto& [N, C] : {std::pair<int64_t, int64_t>{1, 1}, {9, 67}, {300, 768}}) {
    const std::string shape = std::to_string(N) + "x" + std::to_string(C);
    const float eps = 1e-5f;
    Floats x = rng.normal(N * C, 2);
    for (float& v : x) v += 0.5f;
    cases.push_back({"layernorm_forward_" + shape,
                     {output({N, C}), output({N}), output({N}), input({N, C}, x),
                      input({C}, rng.uniform(C, 0.5, 1.5), 1), input({C}, rng.normal(C))},
                     [eps](Backend& b, const std::vector<Tensor>& t) {
                       b.layernorm_forward(t[0], t[1], t[2], t[3], t[4], t[5], eps);
                     },
                     {1e-5, 1e-5}});
    Floats mean, rstd;
    row_statistics(x, N, C, eps, &mean, &rstd);
    cases.push_back({"layernorm_backward_" + shape,
                     {in_out({N, C}, rng.normal(N * C)), in_out({C}, rng.normal(C), 3), in_out({C}, rng.normal(C)),
                      input({N, C}, rng.normal(N * C)), input({N, C}, x), input({C}, rng.uniform(C, 0.5, 1.5)),
                      input({N}, mean), input({N}, rstd)},
                     [](Backend& b, const std::vector<Tensor>& t) {
                       b.layernorm_backward(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]);
                     },
                     {1e-4, 1e-5}});
  }

  // Attention: (B, T, H, hs).
  struct AttentionShape {
    int64_t B, T, H, hs;
  };
  for (const AttentionShape& s : {AttentionShape{1, 1, 1, 4}, AttentionShape{2, 13, 3, 8}, AttentionShape{1, 64, 4, 16},
                                  AttentionShape{3, 33, 2, 12}}) {
    const std::string shape =
        std::to_string(s.B) + "x" + std::to_string(s.T) + "x" + std::to_string(s.H) + "x" + std::to_string(s.hs);
    const int64_t C = s.H * s.hs;
    const int n_head = static_cast<int>(s.H);
    cases.push_back(
        {"attention_forward_" + shape,
         {output({s.B, s.T, C}), output({s.B, s.H, s.T, s.T}), input({s.B, s.T, 3 * C}, rng.normal(s.B * s.T * 3 * C))},
         [n_head](Backend& b, const std::vector<Tensor>& t) { b.attention_forward(t[0], t[1], t[2], n_head); },
         {1e-5, 1e-6}});
    // The backward from each backend's own forward (consistent probabilities on both).
    cases.push_back(
        {"attention_backward_" + shape,
         {output({s.B, s.T, C}), output({s.B, s.H, s.T, s.T}), output({s.B, s.T, 3 * C}), scratch({s.B, s.H, s.T, s.T}),
          input({s.B, s.T, 3 * C}, rng.normal(s.B * s.T * 3 * C)), input({s.B, s.T, C}, rng.normal(s.B * s.T * C))},
         [n_head](Backend& b, const std::vector<Tensor>& t) {
           b.attention_forward(t[0], t[1], t[4], n_head);
           b.attention_backward(t[2], t[3], t[5], t[4], t[1], n_head);
         },
         {1e-4, 1e-5}});
  }

  // Embeddings: a vocabulary shard of V_local rows starting at vocab_start; tokens inside and outside it,
  // repeated.
  {
    const int64_t B = 3, T = 7, N = B * T, C = 19, V_local = 11, vocab_start = 5;
    const int seq_len = static_cast<int>(T);
    Ints ids = rng.integers(N, 0, 20);
    ids[4] = ids[9] = ids[17] = 7;  // one token three times
    const auto forward = [seq_len](Backend& b, const std::vector<Tensor>& t) {
      b.embedding_forward(t[0], t[1], t[2], t[3], seq_len, vocab_start);
    };
    cases.push_back({"embedding_forward",
                     {output({N, C}), tokens({N}, ids), input({V_local, C}, rng.normal(V_local * C), 2),
                      input({T, C}, rng.normal(T * C))},
                     forward});
    cases.push_back({"embedding_forward_no_positions",
                     {output({N, C}), tokens({N}, ids), input({V_local, C}, rng.normal(V_local * C)), none()},
                     forward});
    const auto backward = [seq_len](Backend& b, const std::vector<Tensor>& t) {
      b.embedding_backward(t[0], t[1], t[2], t[3], seq_len, vocab_start);
    };
    cases.push_back({"embedding_backward",
                     {in_out({V_local, C}, rng.normal(V_local * C), 1), in_out({T, C}, rng.normal(T * C)),
                      input({N, C}, rng.normal(N * C)), tokens({N}, ids)},
                     backward});
    cases.push_back(
        {"embedding_backward_no_positions",
         {in_out({V_local, C}, rng.normal(V_local * C)), none(), input({N, C}, rng.normal(N * C)), tokens({N}, ids)},
         backward});
  }

  // Cross-entropy over a vocabulary shard [vocab_start, vocab_start + V) with padding from column `valid` on.
  struct VocabShape {
    int64_t N, V, valid, vocab_start;
  };
  for (const VocabShape& s : {VocabShape{11, 50, 47, 100}, VocabShape{4, 5003, 5000, 0}, VocabShape{3, 8, 0, 16}}) {
    const std::string shape = std::to_string(s.N) + "x" + std::to_string(s.V) + "_valid" + std::to_string(s.valid);
    Floats logits = rng.normal(s.N * s.V, 3);
    // Targets below, inside, in the padding of, and above the shard.
    Ints targets =
        rng.integers(s.N, static_cast<int32_t>(s.vocab_start - 10), static_cast<int32_t>(s.vocab_start + s.V + 10));
    Floats row_max, sum_exp, target_logit;
    logit_statistics(logits, targets, s.N, s.V, s.valid, s.vocab_start, &row_max, &sum_exp, &target_logit);
    const int64_t valid = s.valid, vocab_start = s.vocab_start;
    cases.push_back(
        {"cross_entropy_row_max_" + shape,
         {output({s.N}), input({s.N, s.V}, logits)},
         [valid](Backend& b, const std::vector<Tensor>& t) { b.cross_entropy_row_max(t[0], t[1], valid); }});
    if (s.valid == 0) continue;  // no softmax over an empty shard
    cases.push_back(
        {"cross_entropy_row_stats_" + shape,
         {output({s.N}), output({s.N}), input({s.N, s.V}, logits), input({s.N}, row_max), tokens({s.N}, targets)},
         [valid, vocab_start](Backend& b, const std::vector<Tensor>& t) {
           b.cross_entropy_row_stats(t[0], t[1], t[2], t[3], t[4], vocab_start, valid);
         }});
    cases.push_back({"cross_entropy_loss_backward_" + shape,
                     {output({s.N}), in_out({s.N, s.V}, logits), input({s.N}, row_max), input({s.N}, sum_exp),
                      input({s.N}, target_logit), tokens({s.N}, targets)},
                     [valid, vocab_start](Backend& b, const std::vector<Tensor>& t) {
                       b.cross_entropy_loss_backward(t[0], t[1], t[2], t[3], t[4], t[5], vocab_start, valid,
                                                     1.0f / 44.0f);
                     }});
  }

  // AdamW, decayed and not, with a clipping factor, at a later step.
  for (const float weight_decay : {0.0f, 0.1f}) {
    const int64_t n = 1003;
    AdamWStep step;
    step.lr = 3e-3f;
    step.weight_decay = weight_decay;
    step.step = 3;
    step.grad_scale = 0.7f;
    cases.push_back({weight_decay == 0 ? "adamw_update" : "adamw_update_decayed",
                     {in_out({n}, rng.normal(n), 1), input({n}, rng.normal(n)), in_out({n}, rng.normal(n, 0.1)),
                      in_out({n}, rng.uniform(n, 0, 0.5))},
                     [step](Backend& b, const std::vector<Tensor>& t) { b.adamw_update(t[0], t[1], t[2], t[3], step); },
                     {1e-5, 1e-6}});
  }
  return cases;
}

const std::vector<Case>& cases() {
  static const std::vector<Case> all = make_cases();
  return all;
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

TEST_P(CudaParityTest, MatchesCpuBackend) {
  const Case& c = cases()[GetParam()];
  const auto want = run_case(cpu(), c);
  const auto got = run_case(*gpu_, c);
  ASSERT_EQ(got.size(), want.size());
  size_t compared = 0;
  for (size_t a = 0; a < c.args.size(); ++a) {
    const Arg& arg = c.args[a];
    if (arg.role != Role::kOutput && arg.role != Role::kInOut) continue;
    EXPECT_TRUE(all_close(got[compared], want[compared], arg.dtype, c.tolerance)) << c.name << ", argument " << a;
    ++compared;
  }
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

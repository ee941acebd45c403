// Elementwise kernels (kernels/cuda/elementwise_kernels.cuh) under the SIMT emulation against CpuBackend's add,
// scale, fill and copy, on the sizes of cuda_backend_test, with elementwise.cu's geometry.
//
// Every output is one operation on exact inputs (or none: fill, bf16 -> f32) rounded once to the storage type,
// on both sides, so the results must agree bit for bit: the tolerance is zero.
#include <cstring>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/elementwise_kernels.cuh"
#include "tests/simt/simt_test_util.h"

namespace tessera::simt_test {
namespace {

using cuda::bf16;

constexpr Tolerance kExact{0, 0};

template <typename T>
class SimtElementwise : public ::testing::Test {
 protected:
  CpuBackend cpu_{1};
};
using StorageTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(SimtElementwise, StorageTypes);

// A host tensor over values's storage, for CpuBackend (bf16 values are stored as their 16 bits, as there).
template <typename T>
Tensor host_tensor(std::vector<T>& values) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 2);
  return Tensor(values.data(), std::is_same_v<T, float> ? DType::kF32 : DType::kBF16, Device::kCpu,
                {static_cast<int64_t>(values.size())});
}

unsigned blocks(int64_t n) { return cuda::grid_size(n, cuda::kThreads); }

TYPED_TEST(SimtElementwise, Add) {
  using T = TypeParam;
  std::mt19937 rng(21);
  for (const bool in_place : {false, true}) {
    SCOPED_TRACE(in_place ? "in place" : "3x337");
    const int64_t n = in_place ? 1011 : 3 * 337;
    std::vector<T> a = from<T>(normal(rng, n)), b = from<T>(normal(rng, n));
    std::vector<T> want = poisoned<T>(n), out = poisoned<T>(n);
    std::vector<T> want_a = a;
    this->cpu_.add(in_place ? host_tensor(want_a) : host_tensor(want), host_tensor(want_a), host_tensor(b));
    if (in_place) want = want_a;
    T* target = in_place ? a.data() : out.data();
    simt::launch(cuda::add_kernel<T>, blocks(n), cuda::kThreads, 0, target, a.data(), b.data(), n);
    EXPECT_TRUE(all_close(in_place ? a : out, to_floats(want), kExact));
  }
}

TYPED_TEST(SimtElementwise, Scale) {
  using T = TypeParam;
  std::mt19937 rng(22);
  const int64_t n = 999;
  std::vector<T> t = from<T>(normal(rng, n)), want = t;
  this->cpu_.scale(host_tensor(want), -0.37f);
  simt::launch(cuda::scale_kernel<T>, blocks(n), cuda::kThreads, 0, t.data(), -0.37f, n);
  EXPECT_TRUE(all_close(t, to_floats(want), kExact));
}

// The value is rounded once on the host, as elementwise.cu's fill does; 0.1 is not a bf16 value.
TYPED_TEST(SimtElementwise, Fill) {
  using T = TypeParam;
  for (const auto& [n, value] : {std::pair<int64_t, float>{1001, 3.5f}, {33, 0.1f}}) {
    SCOPED_TRACE(std::to_string(n));
    std::vector<T> t = poisoned<T>(n), want = poisoned<T>(n);
    this->cpu_.fill(host_tensor(want), value);
    simt::launch(cuda::fill_kernel<T>, blocks(n), cuda::kThreads, 0, t.data(), from<T>({value})[0], n);
    EXPECT_TRUE(all_close(t, to_floats(want), kExact));
  }
}

TEST(SimtElementwiseFixed, FillInt32) {
  CpuBackend cpu(1);
  const int64_t n = 37;
  std::vector<int32_t> t(n, -1), want(n, -1);
  cpu.fill(Tensor(want.data(), DType::kI32, Device::kCpu, {n}), 7.0f);
  simt::launch(cuda::fill_kernel<int32_t>, blocks(n), cuda::kThreads, 0, t.data(), int32_t{7}, n);
  EXPECT_EQ(t, want);
}

// copy() between f32 and bf16: normal values, and the halfway cases of bf16 rounding (ties to even).
TEST(SimtElementwiseFixed, ConvertBetweenF32AndBf16) {
  CpuBackend cpu(1);
  std::mt19937 rng(23);
  Floats ties;
  for (uint32_t low : {0x00008000u, 0x00018000u, 0x00007fffu, 0x00008001u}) {
    for (uint32_t high : {0x3f800000u, 0xbf800000u, 0x42480000u}) {
      const uint32_t bits = high | low;
      float x;
      std::memcpy(&x, &bits, sizeof(x));
      ties.push_back(x);
    }
  }
  for (const Floats& values : {normal(rng, 517), ties}) {
    const int64_t n = std::ssize(values);
    SCOPED_TRACE(std::to_string(n));
    std::vector<float> f32 = values;
    std::vector<bf16> narrowed = poisoned<bf16>(n), want_narrowed = poisoned<bf16>(n);
    cpu.copy(host_tensor(want_narrowed), host_tensor(f32));
    simt::launch(cuda::convert_kernel<bf16, float>, blocks(n), cuda::kThreads, 0, narrowed.data(), f32.data(), n);
    EXPECT_TRUE(all_close(narrowed, to_floats(want_narrowed), kExact)) << "f32 -> bf16";

    std::vector<float> widened = poisoned<float>(n), want_widened = poisoned<float>(n);
    cpu.copy(host_tensor(want_widened), host_tensor(want_narrowed));
    simt::launch(cuda::convert_kernel<float, bf16>, blocks(n), cuda::kThreads, 0, widened.data(), want_narrowed.data(),
                 n);
    EXPECT_TRUE(all_close(widened, want_widened, kExact)) << "bf16 -> f32";
  }
}

}  // namespace
}  // namespace tessera::simt_test

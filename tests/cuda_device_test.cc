// What needs no GPU in kernels/cuda: the bf16 peak table, the allocator's buckets, and device queries that must
// not throw (or throw the right error) where there is no GPU.
#include <gtest/gtest.h>

#include "core/check.h"
#include "kernels/cuda/caching_allocator.h"
#include "kernels/cuda/device.h"

namespace tessera::cuda {
namespace {

TEST(DenseBf16Peak, KnownModelsByTheirDriverNames) {
  EXPECT_EQ(dense_bf16_peak_tflops("NVIDIA A100-SXM4-80GB"), 312.0);
  EXPECT_EQ(dense_bf16_peak_tflops("NVIDIA A100-PCIE-40GB"), 312.0);
  EXPECT_EQ(dense_bf16_peak_tflops("NVIDIA A100 80GB PCIe"), 312.0);
  EXPECT_EQ(dense_bf16_peak_tflops("NVIDIA H100 80GB HBM3"), 989.0);
  EXPECT_EQ(dense_bf16_peak_tflops("NVIDIA H100 PCIe"), 756.0);
  EXPECT_EQ(dense_bf16_peak_tflops("NVIDIA H200"), 989.0);
  EXPECT_EQ(dense_bf16_peak_tflops("NVIDIA GH200 480GB"), 989.0);
  EXPECT_EQ(dense_bf16_peak_tflops("NVIDIA L4"), 121.0);
  EXPECT_EQ(dense_bf16_peak_tflops("NVIDIA L40S"), 362.0);
}

TEST(DenseBf16Peak, UnknownOrAmbiguousModelsAreUnknownNotGuessed) {
  EXPECT_EQ(dense_bf16_peak_tflops("NVIDIA H100 NVL"), 0.0);
  EXPECT_EQ(dense_bf16_peak_tflops("NVIDIA H200 NVL"), 0.0);
  EXPECT_EQ(dense_bf16_peak_tflops("NVIDIA H100"), 0.0);  // no variant named: SXM or PCIe?
  EXPECT_EQ(dense_bf16_peak_tflops("NVIDIA RTX A1000"), 0.0);
  EXPECT_EQ(dense_bf16_peak_tflops("NVIDIA L40"), 0.0);
  EXPECT_EQ(dense_bf16_peak_tflops("Tesla V100-SXM2-16GB"), 0.0);
  EXPECT_EQ(dense_bf16_peak_tflops(""), 0.0);
}

TEST(CachingAllocatorBuckets, RoundToSmallAndLargeSteps) {
  EXPECT_EQ(CachingAllocator::bucket_size(0), 512u);
  EXPECT_EQ(CachingAllocator::bucket_size(1), 512u);
  EXPECT_EQ(CachingAllocator::bucket_size(513), 1024u);
  EXPECT_EQ(CachingAllocator::bucket_size(size_t{1} << 20), size_t{1} << 20);
  EXPECT_EQ(CachingAllocator::bucket_size((size_t{1} << 20) + 1), size_t{2} << 20);
  EXPECT_EQ(CachingAllocator::bucket_size((size_t{5} << 20) + 7), size_t{6} << 20);
}

TEST(Devices, CountingNeverThrowsAndSelectingWithoutAGpuIsAConfigError) {
  const int count = device_count();
  EXPECT_GE(count, 0);
  if (count > 0) GTEST_SKIP() << "a GPU is visible; nothing to refuse";
  EXPECT_THROW(select_device(0), ConfigError);
}

}  // namespace
}  // namespace tessera::cuda

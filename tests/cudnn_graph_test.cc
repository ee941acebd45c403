// cuDNN's verdict on CudnnAttention's forward and backward graphs for GPUs described, not present: the attention
// shapes of GPT-2 124M/350M/774M and odd ones must get engines on an A100 (sm80) and an H100 (sm90), and shapes
// the runtime refuses must be refused with a reason. Needs no GPU, so it runs in CI: a change to the graphs that
// cuDNN's fused-attention engines stop recognizing fails here, not first on a GPU machine. What it cannot see:
// whether the graphs compute the right thing (cuda_backend_test, on a GPU) and whether the chosen engine's
// kernels compile (execution plans are not built). Note [Checking the graphs without a GPU], cudnn_attention.cc.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/check.h"
#include "kernels/cuda/cudnn_attention.h"

namespace tessera::cuda {
namespace {

// KV key/value heads; 0 stands for as many as query heads (multi-head attention).
struct Shape {
  int64_t B, T, H, hs, KV = 0;
  int64_t kv_heads() const { return KV == 0 ? H : KV; }
};

std::string describe(const Shape& shape) {
  return str_cat("B=", shape.B, " T=", shape.T, " H=", shape.H, " KV=", shape.kv_heads(), " hs=", shape.hs);
}

// Passes when `text` contains `part`; the failure shows the whole text.
::testing::AssertionResult contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << part << "\" is not in \"" << text << "\"";
}

std::string check(const std::string& device_json, const Shape& shape) {
  return check_attention_graphs_for_device(device_json, shape.B, shape.T, shape.H, shape.kv_heads(), shape.hs);
}

// The described GPUs every accepted shape must get engines on.
std::vector<std::pair<std::string, std::string>> described_gpus() {
  return {{"A100 (sm80)", a100_sxm_json()}, {"H100 (sm90)", h100_sxm_json()}};
}

// cuDNN's runtime-compiled attention engines need libcuda.so.1 loadable, or the heuristics drop all of them.
// The CUDA toolkit's stub (its path comes from CMake) is loaded first: its soname is libcuda.so.1, so cuDNN's
// own dlopen finds it already loaded, and every machine answers alike (where a driver is installed, this process
// still uses the stub). No driver function is called. Without the stub, an installed driver serves as well.
// Returns "" or the problem.
std::string load_driver_library() {
  static const std::string problem = [] {
    const std::string stub = TESSERA_CUDA_DRIVER_STUB;
    if (!stub.empty() && dlopen(stub.c_str(), RTLD_NOW | RTLD_GLOBAL) != nullptr) return std::string();
    const std::string stub_problem = stub.empty() ? "CMake found no stubs/libcuda.so in the CUDA toolkit"
                                                  : str_cat("cannot load ", stub, ": ", dlerror());
    if (dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL) != nullptr) return std::string();
    return str_cat(stub_problem, ", and no CUDA driver (libcuda.so.1) is installed: cuDNN's attention engines ",
                   "need one of the two to be loadable even without a GPU. Install the CUDA toolkit's stubs.");
  }();
  return problem;
}

class CudnnAttentionGraphs : public ::testing::Test {
 protected:
  // Like the GPU tests without a GPU: a machine that has neither the stub nor a driver cannot run the check, and
  // says so instead of failing.
  void SetUp() override {
    const std::string problem = load_driver_library();
    if (!problem.empty()) GTEST_SKIP() << problem;
  }
};

TEST_F(CudnnAttentionGraphs, Gpt2ShapesGetEnginesOnA100AndH100) {
  // GPT-2 124M, 350M and 774M: 12, 16 and 20 heads of 64 channels at T = 1024, micro-batches of 4 to 16.
  std::vector<Shape> shapes;
  for (const int64_t H : {12, 16, 20}) {
    for (const int64_t B : {4, 8, 16}) shapes.push_back({B, 1024, H, 64});
  }
  for (const auto& [gpu, json] : described_gpus()) {
    for (const Shape& shape : shapes) EXPECT_EQ(check(json, shape), "") << gpu << ", " << describe(shape);
  }
}

TEST_F(CudnnAttentionGraphs, OddShapesGetEnginesOnA100AndH100) {
  // T not a multiple of any tile, the smallest and largest head sizes taken, a head size that is not a power of
  // two, the shortest sequence the runtime takes, single batch rows and heads.
  const std::vector<Shape> shapes = {{3, 257, 5, 8},   {1, 257, 1, 8}, {2, 257, 4, 96},
                                     {2, 257, 3, 128}, {1, 2, 1, 64},  {2, 2048, 4, 72}};
  for (const auto& [gpu, json] : described_gpus()) {
    for (const Shape& shape : shapes) EXPECT_EQ(check(json, shape), "") << gpu << ", " << describe(shape);
  }
}

TEST_F(CudnnAttentionGraphs, GroupedQueryShapesGetEnginesOnA100AndH100) {
  // Llama-3.2-1B-like (32 query heads, 8 key/value heads of 64), multi-query (one key/value head), and odd ones:
  // T not a multiple of a tile, the largest head size, groups of 3.
  const std::vector<Shape> shapes = {
      {4, 1024, 32, 64, 8}, {2, 2048, 32, 64, 8}, {2, 257, 8, 128, 1}, {3, 257, 6, 8, 2}, {1, 2, 4, 64, 2}};
  for (const auto& [gpu, json] : described_gpus()) {
    for (const Shape& shape : shapes) EXPECT_EQ(check(json, shape), "") << gpu << ", " << describe(shape);
  }
}

TEST_F(CudnnAttentionGraphs, ShapesTheRuntimeRefusesAreRefusedWithAReason) {
  for (const auto& [gpu, json] : described_gpus()) {
    EXPECT_TRUE(contains(check(json, {4, 1024, 12, 12}), "head size 12 is not a multiple of 8")) << gpu;
    EXPECT_TRUE(contains(check(json, {4, 1024, 12, 160}), "head size 160 is not a multiple of 8 up to 128")) << gpu;
    EXPECT_TRUE(contains(check(json, {4, 1, 12, 64}), "single token")) << gpu;
    EXPECT_TRUE(contains(check(json, {0, 1024, 12, 64}), "empty attention shape")) << gpu;
    EXPECT_TRUE(contains(check(json, {4, 1024, 12, 64, 5}), "5 key/value heads do not divide 12 query heads")) << gpu;
  }
}

TEST_F(CudnnAttentionGraphs, CudnnItselfRefusesAGpuOlderThanAmpere) {
  // Tessera's own checks pass this shape; the refusal is cuDNN's heuristics finding no engine for a T4, which
  // shows the accepted cases above are cuDNN's answer for the described GPU and not a check that always passes.
  const std::string reason = check(described_gpu_json(75, 40, 65536, "Tesla T4"), {4, 1024, 12, 64});
  EXPECT_TRUE(contains(reason, "cuDNN cannot build the attention forward graph for B=4 T=1024 H=12 hs=64"));
  EXPECT_TRUE(contains(reason, "cuDNN has no engine for this graph"));
}

TEST_F(CudnnAttentionGraphs, ADescriptionCudnnCannotReadIsRefusedWithItsReason) {
  EXPECT_TRUE(contains(check("{\"deviceVer\": 900}", {4, 1024, 12, 64}), "cuDNN does not take the GPU description"));
  EXPECT_TRUE(contains(check("not json", {4, 1024, 12, 64}), "cuDNN does not take the GPU description"));
}

TEST(DescribedGpuJson, NamesTheGpuAndItsComputeCapability) {
  const std::string json = described_gpu_json(90, 132, 232448, "NVIDIA H100 80GB HBM3");
  EXPECT_TRUE(contains(json, "\"deviceName\":\"NVIDIA H100 80GB HBM3\""));
  EXPECT_TRUE(contains(json, "\"deviceVer\":900"));
  EXPECT_TRUE(contains(json, "\"multiProcessorCount\":132"));
  EXPECT_TRUE(contains(json, "\"maxSharedMemoryPerBlockOptin\":232448"));
  EXPECT_EQ(h100_sxm_json(), json);
  EXPECT_TRUE(contains(a100_sxm_json(), "\"deviceVer\":800"));
  EXPECT_THROW(described_gpu_json(90, 132, 232448, "a \"quoted\" name"), ConfigError);
}

}  // namespace
}  // namespace tessera::cuda

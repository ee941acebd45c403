// DP gradient buckets without MPI: the bucketing and ZeRO-1 partition math of parallel/grad_sync.h
// (closed-form cases and invariants over random parameter lists), and, with a recording process group, that
// DpGradSync launches each bucket exactly when backward has completed its parameters.
#include "parallel/grad_sync.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/check.h"
#include "models/gpt2/gpt2_model.h"
#include "core/model_config.h"
#include "kernels/cpu/cpu_backend.h"
#include "parallel/local_process_group.h"

namespace tessera {
namespace {

// ---- plan_grad_buckets ------------------------------------------------------------------------------------

TEST(PlanGradBuckets, WholeParametersInReverseOrderUpToTheCap) {
  // Parameters 0..4 at elements [0,4) [4,10) [10,12) [12,20) [20,23).
  const std::vector<int64_t> numels = {4, 6, 2, 8, 3};
  const std::vector<GradBucket> buckets = plan_grad_buckets(numels, 10, 1);
  // From the end: {4: 3} + {3: 8} = 11 > 10, so p4 alone; {3: 8} + {2: 2} = 10; {1: 6} + {0: 4} = 10.
  ASSERT_EQ(buckets.size(), 3u);
  EXPECT_EQ(buckets[0].first_param, 4);
  EXPECT_EQ(buckets[0].end_param, 5);
  EXPECT_EQ(buckets[0].begin, 20);
  EXPECT_EQ(buckets[0].end, 23);
  EXPECT_EQ(buckets[1].first_param, 2);
  EXPECT_EQ(buckets[1].end_param, 4);
  EXPECT_EQ(buckets[1].begin, 10);
  EXPECT_EQ(buckets[1].end, 20);
  EXPECT_EQ(buckets[2].first_param, 0);
  EXPECT_EQ(buckets[2].end_param, 2);
  EXPECT_EQ(buckets[2].begin, 0);
  EXPECT_EQ(buckets[2].end, 10);
}

TEST(PlanGradBuckets, AParameterLargerThanTheCapGetsItsOwnBucket) {
  const std::vector<GradBucket> buckets = plan_grad_buckets({2, 100, 3}, 5, 1);
  ASSERT_EQ(buckets.size(), 3u);
  EXPECT_EQ(buckets[0].size(), 3);
  EXPECT_EQ(buckets[1].size(), 100);
  EXPECT_EQ(buckets[1].first_param, 1);
  EXPECT_EQ(buckets[1].end_param, 2);
  EXPECT_EQ(buckets[2].size(), 2);
}

TEST(PlanGradBuckets, HugeCapIsOneBucketAndTinyCapOneBucketPerParameter) {
  const std::vector<int64_t> numels = {5, 1, 7, 7};
  const std::vector<GradBucket> one = plan_grad_buckets(numels, 1 << 30, 1);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].begin, 0);
  EXPECT_EQ(one[0].end, 20);
  const std::vector<GradBucket> each = plan_grad_buckets(numels, 1, 1);
  ASSERT_EQ(each.size(), numels.size());
  for (size_t k = 0; k < each.size(); ++k) {
    EXPECT_EQ(each[k].first_param, static_cast<int>(numels.size() - 1 - k));
    EXPECT_EQ(each[k].size(), numels[numels.size() - 1 - k]);
  }
  EXPECT_TRUE(plan_grad_buckets({}, 10, 2).empty());
}

TEST(PlanGradBuckets, ChunksAndShardOffsetsForZero) {
  // Buckets of 3, 10 and 10 elements over D = 4: chunks ceil(n/4) = 1, 3, 3; shard offsets 0, 1, 4; shard 7.
  const std::vector<GradBucket> buckets = plan_grad_buckets({4, 6, 2, 8, 3}, 10, 4);
  ASSERT_EQ(buckets.size(), 3u);
  EXPECT_EQ(buckets[0].chunk, 1);
  EXPECT_EQ(buckets[1].chunk, 3);
  EXPECT_EQ(buckets[2].chunk, 3);
  EXPECT_EQ(buckets[0].shard_offset, 0);
  EXPECT_EQ(buckets[1].shard_offset, 1);
  EXPECT_EQ(buckets[2].shard_offset, 4);
  EXPECT_EQ(shard_numel(buckets), 7);
}

TEST(PlanShardSegments, SplitsChunksAtParameterBoundaries) {
  // Bucket 1 = params 2 [10,12) and 3 [12,20); D = 4, chunk 3: rank 1 owns bucket elements [3,6) = flat
  // [13,16), all of param 3; rank 0 owns [10,13) = 2 elements of param 2 and 1 of param 3.
  const std::vector<int64_t> numels = {4, 6, 2, 8, 3};
  const std::vector<GradBucket> buckets = plan_grad_buckets(numels, 10, 4);
  const std::vector<ShardSegment> rank0 = plan_shard_segments(buckets, numels, 0, 4);
  // Bucket 0 (p4, [20,23), chunk 1): rank 0 owns [20,21). Bucket 1 as above. Bucket 2 (p0,p1 [0,10), chunk
  // 3): rank 0 owns [0,3) of p0.
  ASSERT_EQ(rank0.size(), 4u);
  EXPECT_EQ(rank0[0].param, 4);
  EXPECT_EQ(rank0[0].flat_begin, 20);
  EXPECT_EQ(rank0[0].size, 1);
  EXPECT_EQ(rank0[0].shard_begin, 0);
  EXPECT_EQ(rank0[1].param, 2);
  EXPECT_EQ(rank0[1].flat_begin, 10);
  EXPECT_EQ(rank0[1].size, 2);
  EXPECT_EQ(rank0[1].shard_begin, 1);
  EXPECT_EQ(rank0[2].param, 3);
  EXPECT_EQ(rank0[2].flat_begin, 12);
  EXPECT_EQ(rank0[2].size, 1);
  EXPECT_EQ(rank0[2].shard_begin, 3);
  EXPECT_EQ(rank0[3].param, 0);
  EXPECT_EQ(rank0[3].flat_begin, 0);
  EXPECT_EQ(rank0[3].size, 3);
  EXPECT_EQ(rank0[3].shard_begin, 4);
  // Rank 3 of bucket 0 (3 elements, chunk 1) owns only padding; of bucket 2 it owns [9,10), one element.
  const std::vector<ShardSegment> rank3 = plan_shard_segments(buckets, numels, 3, 4);
  for (const ShardSegment& s : rank3) EXPECT_NE(s.bucket, 0);
}

// Invariants over random parameter lists, caps and DP sizes: buckets tile the buffer from the top down in
// whole parameters, respect the cap unless a single parameter exceeds it, and the ranks' shard segments
// cover every element exactly once, inside one parameter, at the shard position the partition math gives.
TEST(PlanGradBuckets, InvariantsOnRandomLayouts) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const int n_params = 1 + static_cast<int>(rng() % 12);
    std::vector<int64_t> numels(n_params);
    std::vector<int64_t> offsets(n_params + 1, 0);
    for (int i = 0; i < n_params; ++i) {
      numels[i] = 1 + static_cast<int64_t>(rng() % 40);
      offsets[i + 1] = offsets[i] + numels[i];
    }
    const int64_t total = offsets[n_params];
    const int64_t cap = 1 + static_cast<int64_t>(rng() % 60);
    const int D = 1 + static_cast<int>(rng() % 5);
    SCOPED_TRACE(testing::Message() << "trial " << trial << " cap " << cap << " D " << D);
    const std::vector<GradBucket> buckets = plan_grad_buckets(numels, cap, D);
    int64_t top = total;
    int end_param = n_params;
    int64_t shard_offset = 0;
    for (size_t k = 0; k < buckets.size(); ++k) {
      const GradBucket& b = buckets[k];
      EXPECT_EQ(b.end, top);
      EXPECT_EQ(b.end_param, end_param);
      EXPECT_LT(b.first_param, b.end_param);
      EXPECT_EQ(b.begin, offsets[b.first_param]);
      EXPECT_EQ(b.end, offsets[b.end_param]);
      EXPECT_TRUE(b.size() <= cap || b.end_param - b.first_param == 1);
      // Greedy: the next parameter down would not have fit.
      if (b.first_param > 0) {
        EXPECT_GT(b.end - offsets[b.first_param - 1], cap);
      }
      EXPECT_EQ(b.chunk, (b.size() + D - 1) / D);
      EXPECT_EQ(b.shard_offset, shard_offset);
      shard_offset += b.chunk;
      top = b.begin;
      end_param = b.first_param;
    }
    EXPECT_EQ(top, 0);
    EXPECT_EQ(shard_numel(buckets), shard_offset);

    std::vector<int> owners(total, 0);
    for (int r = 0; r < D; ++r) {
      for (const ShardSegment& s : plan_shard_segments(buckets, numels, r, D)) {
        const GradBucket& b = buckets[s.bucket];
        EXPECT_GE(s.flat_begin, offsets[s.param]);
        EXPECT_LE(s.flat_begin + s.size, offsets[s.param + 1]);
        EXPECT_GE(s.flat_begin, b.begin + r * b.chunk);
        EXPECT_LE(s.flat_begin + s.size, b.begin + (r + 1) * b.chunk);
        EXPECT_EQ(s.shard_begin, b.shard_offset + (s.flat_begin - b.begin - r * b.chunk));
        for (int64_t i = s.flat_begin; i < s.flat_begin + s.size; ++i) ++owners[i];
      }
    }
    for (int64_t i = 0; i < total; ++i) ASSERT_EQ(owners[i], 1) << "element " << i;
  }
}

TEST(BucketCapElements, MebibytesOfFloats) {
  EXPECT_EQ(bucket_cap_elements(25), 25 * 1024 * 1024 / 4);
  EXPECT_EQ(bucket_cap_elements(1.0 / 1024), 256);
  EXPECT_EQ(bucket_cap_elements(1e-9), 1);
}

// ---- launch timing ----------------------------------------------------------------------------------------

// A group of two whose collectives complete at once and do nothing: it records which flat-buffer ranges were
// all-reduced, to see when DpGradSync launches them.
class RecordingGroup final : public ProcessGroup {
 public:
  explicit RecordingGroup(const float* base) : base_(base) {}
  int rank() const override { return 0; }
  int size() const override { return 2; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return world_ranks_; }
  WorkHandle all_reduce(Tensor t, ReduceOp) override {
    launched.emplace_back(t.f32() - base_, t.numel());
    return std::make_unique<Done>();
  }
  WorkHandle reduce_scatter(Tensor, Tensor, ReduceOp) override { return std::make_unique<Done>(); }
  WorkHandle all_gather(Tensor, Tensor) override { return std::make_unique<Done>(); }
  WorkHandle broadcast(Tensor, int) override { return std::make_unique<Done>(); }
  WorkHandle send(Tensor, int, int) override { return std::make_unique<Done>(); }
  WorkHandle recv(Tensor, int, int) override { return std::make_unique<Done>(); }
  void barrier() override {}

  std::vector<std::pair<int64_t, int64_t>> launched;  // (flat offset, elements)

 private:
  struct Done final : Work {
    void wait() override {}
    bool test() override { return true; }
  };
  const float* base_;
  std::string name_ = "dp";
  std::vector<int> world_ranks_{0, 1};
};

bool is_final_norm(const LocalParam& p) { return p.spec.name.rfind("lnf.", 0) == 0; }

ModelConfig tiny_model() {
  ModelConfig c;
  c.vocab_size = 64;
  c.n_layer = 3;
  c.n_head = 4;
  c.n_embd = 16;
  c.max_seq_len = 8;
  return c;
}

TEST(DpGradSync, LaunchesEachBucketWhenBackwardHasCompletedIt) {
  CpuBackend backend(1);
  LocalProcessGroup tp("tp");
  StageRange stage{.first_layer = 0, .end_layer = 3, .has_embedding = true, .has_head = true};
  Gpt2Model model(tiny_model(), backend, tp, stage, 1, 8, 1);
  RecordingGroup dp(model.flat_grads().f32());
  // One bucket per parameter: each launch shows exactly when its parameter was considered complete.
  DpGradSync sync(model, backend, dp, 1e-9, DpGradSync::Mode::kAllReduce);
  const std::vector<LocalParam>& params = model.params();
  ASSERT_EQ(sync.buckets().size(), params.size());
  auto launched_names = [&] {
    std::vector<std::string> names;
    for (const auto& [offset, n] : dp.launched) {
      for (const LocalParam& p : params)
        if (p.offset == offset && p.grad.numel() == n) names.push_back(p.spec.name);
    }
    return names;
  };
  auto expected_names = [&](auto keep) {
    std::vector<std::string> names;
    for (auto it = params.rbegin(); it != params.rend(); ++it)
      if (keep(*it)) names.push_back(it->spec.name);
    return names;
  };

  sync.start_step();
  EXPECT_TRUE(dp.launched.empty());
  sync.mark_layer_done(2);  // the final norm and block 2
  EXPECT_EQ(launched_names(),
            expected_names([](const LocalParam& p) { return p.spec.layer == 2 || is_final_norm(p); }));
  sync.mark_layer_done(1);
  sync.mark_layer_done(0);
  EXPECT_EQ(launched_names(),
            expected_names([](const LocalParam& p) { return p.spec.layer >= 0 || is_final_norm(p); }));
  sync.mark_layer_done(-1);  // the embeddings
  EXPECT_EQ(launched_names(), expected_names([](const LocalParam&) { return true; }));
  sync.finish();
  EXPECT_EQ(dp.launched.size(), params.size());

  // Without overlap nothing starts before finish(), which then launches everything in the same order.
  dp.launched.clear();
  sync.set_overlap(false);
  sync.start_step();
  sync.mark_layer_done(2);
  sync.mark_layer_done(-1);
  EXPECT_TRUE(dp.launched.empty());
  sync.finish();
  EXPECT_EQ(launched_names(), expected_names([](const LocalParam&) { return true; }));
}

TEST(DpGradSync, BucketsOfSeveralParametersWaitForTheirLastOne) {
  CpuBackend backend(1);
  LocalProcessGroup tp("tp");
  StageRange stage{.first_layer = 0, .end_layer = 3, .has_embedding = true, .has_head = true};
  Gpt2Model model(tiny_model(), backend, tp, stage, 1, 8, 1);
  RecordingGroup dp(model.flat_grads().f32());
  // A bucket holds about a block and a half, so some buckets straddle two blocks.
  const int64_t block = model.find_param("h.1.ln1.weight")->offset - model.find_param("h.0.ln1.weight")->offset;
  DpGradSync sync(model, backend, dp, 1.5 * block * sizeof(float) / (1024.0 * 1024.0), DpGradSync::Mode::kAllReduce);
  ASSERT_GT(sync.buckets().size(), 2u);
  const std::vector<LocalParam>& params = model.params();
  sync.start_step();
  for (int layer = 2; layer >= -1; --layer) {
    sync.mark_layer_done(layer);
    // Launched: exactly the buckets whose every parameter is complete, i.e. whose lowest block >= layer (the
    // embeddings count as -1, the final norm as block 2).
    size_t expected = 0;
    for (const GradBucket& b : sync.buckets()) {
      int lowest = 1 << 30;
      for (int i = b.first_param; i < b.end_param; ++i) {
        const ParamSpec& s = params[i].spec;
        lowest = std::min(lowest, s.layer >= 0 ? s.layer : is_final_norm(params[i]) ? 2 : -1);
      }
      if (lowest >= layer) ++expected;
    }
    EXPECT_EQ(dp.launched.size(), expected) << "after block " << layer;
  }
  sync.finish();
  // The launches tile the buffer from the top down.
  int64_t top = model.flat_grads().numel();
  for (const auto& [offset, n] : dp.launched) {
    EXPECT_EQ(offset + n, top);
    top = offset;
  }
  EXPECT_EQ(top, 0);
}

TEST(DpGradSync, LayersMustCompleteInDecreasingOrder) {
  CpuBackend backend(1);
  LocalProcessGroup tp("tp");
  StageRange stage{.first_layer = 0, .end_layer = 3, .has_embedding = true, .has_head = true};
  Gpt2Model model(tiny_model(), backend, tp, stage, 1, 8, 1);
  RecordingGroup dp(model.flat_grads().f32());
  DpGradSync sync(model, backend, dp, 25, DpGradSync::Mode::kAllReduce);
  sync.start_step();
  sync.mark_layer_done(1);
  EXPECT_THROW(sync.mark_layer_done(2), InternalError);
  sync.finish();
}

}  // namespace
}  // namespace tessera

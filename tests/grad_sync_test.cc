// DP gradient buckets without MPI: the bucketing and ZeRO-1 partition math of parallel/grad_sync.h
// (closed-form cases and invariants over random parameter lists), and, with a recording process group, that
// DpGradSync launches each bucket exactly when backward has completed its parameters. ZeRO-2: the layer-
// granular buckets, the model's gradient ring (Note [Gradient storage]: where each gradient lives, how many
// bytes it saves) and, with a process group that only reduces when waited on, that the sync never lets a
// block's backward write a ring slot before the collective reading it is complete, and sums every micro-batch.
#include "parallel/grad_sync.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/check.h"
#include "core/model_config.h"
#include "kernels/cpu/cpu_backend.h"
#include "models/gpt2/gpt2_model.h"
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

TEST(PlanGradBuckets, WholeGroupsAreOneBucketEachAndCappedRunsStopAtThem) {
  // p0, p1 resident (input side); p2..p3 block 0; p4..p5 block 1; p6 resident (output side).
  const std::vector<int64_t> numels = {3, 4, 5, 6, 5, 6, 2};
  const std::vector<int> whole = {-1, -1, 0, 0, 1, 1, -1};
  // A cap of 4 would split each block; `whole` keeps them together; the resident runs stay under the cap.
  const std::vector<GradBucket> buckets = plan_grad_buckets(numels, 4, 2, whole);
  ASSERT_EQ(buckets.size(), 5u);
  EXPECT_EQ(buckets[0].first_param, 6);  // the output side: alone (p5 is another group)
  EXPECT_EQ(buckets[0].group, -1);
  EXPECT_EQ(buckets[1].first_param, 4);  // block 1
  EXPECT_EQ(buckets[1].end_param, 6);
  EXPECT_EQ(buckets[1].group, 1);
  EXPECT_EQ(buckets[1].size(), 11);
  EXPECT_EQ(buckets[1].chunk, 6);
  EXPECT_EQ(buckets[2].first_param, 2);  // block 0
  EXPECT_EQ(buckets[2].group, 0);
  EXPECT_EQ(buckets[2].begin, 7);
  EXPECT_EQ(buckets[3].first_param, 1);  // 4 + 3 > 4: one parameter each
  EXPECT_EQ(buckets[4].first_param, 0);
  EXPECT_EQ(buckets[4].begin, 0);
  // Shard offsets follow the chunks: 1, 6, 6, 2, 2.
  EXPECT_EQ(buckets[2].shard_offset, 7);
  EXPECT_EQ(shard_numel(buckets), 17);
  // Without groups the same parameters bucket under the cap as before.
  EXPECT_EQ(plan_grad_buckets(numels, 4, 2).size(), plan_grad_buckets(numels, 4, 2, std::vector<int>(7, -1)).size());
  for (const GradBucket& b : plan_grad_buckets(numels, 4, 2)) EXPECT_EQ(b.group, -1);
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

ModelConfig tiny_model_layers(int layers) {
  ModelConfig c;
  c.vocab_size = 64;
  c.n_layer = layers;
  c.n_head = 4;
  c.n_embd = 16;
  c.max_seq_len = 8;
  return c;
}

ModelConfig tiny_model() { return tiny_model_layers(3); }

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

// ---- ZeRO-2: the gradient ring ------------------------------------------------------------------------------

ModelConfig ring_model(int ring, int align) {
  ModelConfig c = tiny_model_layers(5);
  c.gradient_storage = GradientStorage::kLayerRing;
  c.gradient_ring = ring;
  c.gradient_ring_align = align;
  return c;
}

int64_t block_numel(const Model& model, int layer) {
  int64_t n = 0;
  for (const LocalParam& p : model.params())
    if (p.spec.place == ParamPlace::kBlock && p.spec.layer == layer) n += p.grad.numel();
  return n;
}

TEST(GradientRing, BlocksShareTwoSlotsAndResidentGradientsStayWhole) {
  CpuBackend backend(1);
  LocalProcessGroup tp("tp");
  StageRange stage{.first_layer = 0, .end_layer = 5, .has_embedding = true, .has_head = true};
  Gpt2Model flat(tiny_model_layers(5), backend, tp, stage, 1, 8, 1);
  Gpt2Model ring(ring_model(2, 3), backend, tp, stage, 1, 8, 1);
  ASSERT_EQ(flat.gradient_storage(), GradientStorage::kFlat);
  ASSERT_EQ(ring.gradient_storage(), GradientStorage::kLayerRing);
  ASSERT_EQ(ring.gradient_ring_slots(), 2);
  const int64_t layer = block_numel(ring, 0);
  const int64_t all = flat.flat_params().numel();
  const int64_t slot = (layer + 2) / 3 * 3;  // padded to a multiple of 3
  EXPECT_EQ(ring.gradient_ring_slot(0).numel(), slot);
  // The memory really falls: 5 blocks' worth of gradients become 2 (padded) slots.
  EXPECT_EQ(flat.gradient_bytes(), all * 4);
  EXPECT_EQ(ring.gradient_bytes(), (all - 5 * layer + 2 * slot) * 4);
  EXPECT_LE(ring.gradient_bytes(), flat.gradient_bytes() - (3 * layer - 4) * 4);
  // Logical offsets are those of the flat model; block l's gradients start slot l % 2, back to back.
  const float* resident = ring.flat_grads().f32();
  for (size_t i = 0; i < ring.params().size(); ++i) {
    const LocalParam& p = ring.params()[i];
    EXPECT_EQ(p.offset, flat.params()[i].offset) << p.spec.name;
    if (p.spec.place == ParamPlace::kBlock) {
      const LocalParam* first = nullptr;
      for (const LocalParam& q : ring.params())
        if (q.spec.layer == p.spec.layer && first == nullptr) first = &q;
      EXPECT_EQ(p.grad.f32() - ring.gradient_ring_slot(p.spec.layer % 2).f32(), p.offset - first->offset)
          << p.spec.name;
      EXPECT_EQ(ring.gradient_ring_slot_of(p.spec.layer), p.spec.layer % 2);
    } else {
      EXPECT_EQ(p.grad.f32(), resident) << p.spec.name;
      resident += p.grad.numel();
    }
  }
  EXPECT_EQ(flat.gradient_ring_slot_of(3), -1);
}

TEST(GradientRing, OneBlockPerStageNeedsOneSlotAndFlatSyncsRefuseTheRing) {
  CpuBackend backend(1);
  LocalProcessGroup tp("tp");
  StageRange stage{.first_layer = 2, .end_layer = 3, .has_embedding = false, .has_head = false};
  Gpt2Model ring(ring_model(2, 1), backend, tp, stage, 1, 8, 1);
  EXPECT_EQ(ring.gradient_ring_slots(), 1);
  EXPECT_EQ(ring.gradient_bytes(), block_numel(ring, 2) * 4);
  LocalProcessGroup dp("dp");
  EXPECT_THROW(DpGradSync(ring, backend, dp, 25, DpGradSync::Mode::kReduceScatter), InternalError);
}

// A DP group of two in which this rank is rank 0 and its peer holds the same gradients: reduce_scatter's chunk
// 0 of the sum is twice the input's first chunk. It reduces only when waited on (test() never completes), at
// which moment it reads the input, so an input overwritten before its wait shows in the result.
class LazyPairGroup final : public ProcessGroup {
 public:
  int rank() const override { return 0; }
  int size() const override { return 2; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return world_ranks_; }
  WorkHandle all_reduce(Tensor, ReduceOp) override {
    return std::make_unique<Lazy>([] {});
  }
  WorkHandle reduce_scatter(Tensor out, Tensor in, ReduceOp) override {
    ++reduce_scatters;
    EXPECT_EQ(in.numel(), 2 * out.numel());
    return std::make_unique<Lazy>([out, in] {
      for (int64_t i = 0; i < out.numel(); ++i) out.f32()[i] = 2 * in.f32()[i];
    });
  }
  WorkHandle all_gather(Tensor out, Tensor in) override {
    return std::make_unique<Lazy>([out, in] {
      for (int64_t i = 0; i < out.numel(); ++i) out.f32()[i] = in.f32()[i % in.numel()];
    });
  }
  WorkHandle broadcast(Tensor, int) override {
    return std::make_unique<Lazy>([] {});
  }
  WorkHandle send(Tensor, int, int) override {
    return std::make_unique<Lazy>([] {});
  }
  WorkHandle recv(Tensor, int, int) override {
    return std::make_unique<Lazy>([] {});
  }
  void barrier() override {}

  int reduce_scatters = 0;

 private:
  struct Lazy final : Work {
    explicit Lazy(std::function<void()> run) : run_(std::move(run)) {}
    ~Lazy() override { Lazy::wait(); }
    void wait() override {
      if (run_) run_();
      run_ = nullptr;
    }
    bool test() override { return false; }
    std::function<void()> run_;
  };
  std::string name_ = "dp";
  std::vector<int> world_ranks_{0, 1};
};

TEST(DpGradSync, Zero2ReducesEveryMicroBatchAndNeverOverwritesASlotInFlight) {
  CpuBackend backend(1);
  LocalProcessGroup tp("tp");
  StageRange stage{.first_layer = 0, .end_layer = 5, .has_embedding = true, .has_head = true};
  Gpt2Model model(ring_model(2, 2), backend, tp, stage, 1, 8, 1);
  LazyPairGroup dp;
  DpGradSync sync(model, backend, dp, 1e-3, DpGradSync::Mode::kShardedGradients);
  const std::vector<LocalParam>& params = model.params();
  int blocks = 0;
  for (const GradBucket& b : sync.buckets()) blocks += b.group >= 0;
  EXPECT_EQ(blocks, 5);
  // Small integers: every sum is exact. Block parameters get value(m, e) in micro-batch m, accumulated into
  // their gradient as backward would; resident ones (e % 5) once.
  const auto value = [](int m, int64_t e) { return static_cast<float>(m + 1 + e % 7); };
  const auto add_block = [&](int layer, int m) {
    for (const LocalParam& p : params) {
      if (p.spec.place != ParamPlace::kBlock || p.spec.layer != layer) continue;
      std::vector<float> g(static_cast<size_t>(p.grad.numel()));
      backend.copy_to_host(g.data(), p.grad);
      for (int64_t i = 0; i < p.grad.numel(); ++i) g[i] += value(m, p.offset + i);
      backend.copy_from_host(p.grad, g.data());
    }
  };
  const int micro_batches = 3;
  for (int step = 0; step < 2; ++step) {
    dp.reduce_scatters = 0;
    model.zero_grads();
    for (const LocalParam& p : params) {
      if (p.spec.place == ParamPlace::kBlock) continue;
      std::vector<float> g(static_cast<size_t>(p.grad.numel()));
      for (int64_t i = 0; i < p.grad.numel(); ++i) g[i] = static_cast<float>((p.offset + i) % 5);
      backend.copy_from_host(p.grad, g.data());
    }
    sync.start_step();
    for (int m = 0; m < micro_batches; ++m) {
      sync.backward_begin();
      for (int layer = 4; layer >= 0; --layer) {
        add_block(layer, m);
        sync.mark_block_done(layer);
        if (m + 1 == micro_batches) sync.mark_layer_done(layer);
      }
    }
    sync.mark_layer_done(-1);
    sync.finish();
    EXPECT_EQ(dp.reduce_scatters, 5 * micro_batches + static_cast<int>(sync.buckets().size()) - 5);
    // Rank 0's shard: twice its chunk of every bucket, the blocks' summed over the micro-batches.
    std::vector<float> shard(static_cast<size_t>(sync.shard().numel()));
    backend.copy_to_host(shard.data(), sync.shard());
    int64_t checked = 0;
    for (const ShardSegment& s : sync.shard_segments()) {
      const bool block = params[s.param].spec.place == ParamPlace::kBlock;
      for (int64_t j = 0; j < s.size; ++j) {
        const int64_t e = s.flat_begin + j;
        float want = 0;
        if (block) {
          for (int m = 0; m < micro_batches; ++m) want += 2 * value(m, e);
        } else {
          want = 2.0f * static_cast<float>(e % 5);
        }
        ASSERT_EQ(shard[s.shard_begin + j], want) << params[s.param].spec.name << " element " << e;
        ++checked;
      }
    }
    EXPECT_GT(checked, 0);
    // The ring is zero again for the next step.
    for (int slot = 0; slot < model.gradient_ring_slots(); ++slot) {
      std::vector<float> h(static_cast<size_t>(model.gradient_ring_slot(slot).numel()));
      backend.copy_to_host(h.data(), model.gradient_ring_slot(slot));
      EXPECT_EQ(*std::max_element(h.begin(), h.end()), 0.0f);
      EXPECT_EQ(*std::min_element(h.begin(), h.end()), 0.0f);
    }
  }
}

}  // namespace
}  // namespace tessera

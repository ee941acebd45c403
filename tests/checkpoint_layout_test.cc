// Checkpoint math without files or MPI: XXH64, the boxes a shard's pieces cover (QKV parts, vocabulary
// padding, column splits, ZeRO-like partial ranges), who stores which replica, read plans across layouts and
// the tiling checks that find overlaps and gaps.
#include "launcher/checkpoints/checkpoint_layout.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "core/check.h"
#include "launcher/common/checksum.h"
#include "launcher/common/durable_file.h"
#include "models/gpt2/gpt2_model.h"
#include "tests/checkpoint_state.h"
#include "tests/run_command.h"
#include "tests/temp_dir.h"

namespace tessera {
namespace {

using testing::error_message;
using testing::ShardState;
using testing::tiny_model;

// ---- XXH64 --------------------------------------------------------------------------------------------------

TEST(Xxh64, KnownValues) {
  // The reference implementation's values; the low 32 bits also match the checksums zstd writes.
  EXPECT_EQ(xxh64("", 0), 0xEF46DB3751D8E999ULL);
  EXPECT_EQ(xxh64("a", 1), 0xD24EC4F1A98C6E5BULL);
  EXPECT_EQ(xxh64("abc", 3), 0x44BC2CF5AD770999ULL);
  EXPECT_EQ(hex64(0xEF46DB3751D8E999ULL), "ef46db3751d8e999");
}

TEST(Xxh64, StreamingInAnyPiecesEqualsOneShot) {
  std::string data(1000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + 3);
  for (size_t size : {0, 1, 31, 32, 33, 63, 64, 100, 1000}) {
    const uint64_t want = xxh64(data.data(), size);
    for (size_t piece : {1, 3, 17, 32, 37, 1000}) {
      Xxh64 hash;
      for (size_t i = 0; i < size; i += piece) hash.update(data.data() + i, std::min(piece, size - i));
      EXPECT_EQ(hash.digest(), want) << "size " << size << " in pieces of " << piece;
    }
  }
}

TEST(Xxh64, FileOfEveryLength) {
  testing::TempDir dir;
  std::string data(5000, 'q');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 13);
  testing::write_text_file(dir.file("f"), data);
  uint64_t size = 0;
  EXPECT_EQ(xxh64_file(dir.file("f"), &size), xxh64(data.data(), data.size()));
  EXPECT_EQ(size, data.size());
  const std::string message = error_message<CheckpointError>([&] { xxh64_file(dir.file("missing")); });
  EXPECT_NE(message.find("missing"), std::string::npos) << message;
}

// A checkpoint file's digest, taken as the checkpoint writer takes it (hash_and_sync_file) and as the loader
// checks it (xxh64_file), is the one the xxh64sum command prints: checkpoints can be checked with stock tools,
// and those written before libxxhash did the hashing stay valid. Sizes around the 32-byte stripe and the 1 MiB
// read buffer.
TEST(Xxh64, FilesHashAsXxh64sumPrintsThem) {
  const std::string xxh64sum = TESSERA_XXH64SUM;
  ASSERT_FALSE(xxh64sum.empty()) << "xxh64sum was not found when the tests were configured: install the Debian "
                                    "package xxhash (scripts/install-deps.sh) and configure again";
  testing::TempDir dir;
  for (size_t size : {size_t{0}, size_t{1}, size_t{31}, size_t{32}, size_t{33}, size_t{1000}, size_t{1} << 20,
                      (size_t{1} << 20) + 7, size_t{3} << 20}) {
    SCOPED_TRACE(size);
    std::string data(size, '\0');
    uint64_t x = size + 1;
    for (char& c : data) c = static_cast<char>((x = x * 6364136223846793005ULL + 1442695040888963407ULL) >> 56);
    const std::string path = dir.file("shard_" + std::to_string(size) + ".h5");
    testing::write_text_file(path, data);
    const testing::CommandResult r =
        testing::run_command("('" + xxh64sum + "' '" + path + "' 2>/dev/null)");  // no progress
    ASSERT_EQ(r.exit_code, 0) << r.output;
    ASSERT_GE(r.output.size(), 16u) << r.output;
    const std::string want = r.output.substr(0, 16);
    uint64_t written_size = 0, read_size = 0;
    EXPECT_EQ(hex64(hash_and_sync_file(path, &written_size)), want);
    EXPECT_EQ(hex64(xxh64_file(path, &read_size)), want);
    EXPECT_EQ(hex64(xxh64(data.data(), data.size())), want);
    EXPECT_EQ(written_size, size);
    EXPECT_EQ(read_size, size);
  }
}

// ---- boxes ----------------------------------------------------------------------------------------------------

ParamSpec spec_named(const std::string& name) {
  for (const ParamSpec& spec : gpt2_param_specs(tiny_model())) {
    if (spec.name == name) return spec;
  }
  ADD_FAILURE() << "no parameter " << name;
  return {};
}

TEST(LocalBlocks, FusedQkvShardIsThreeBoxes) {
  // C = 16, tp = 2: rank 1 holds rows 8..16 of each of Q, K, V (global rows 8, 24, 40).
  const ParamSpec spec = spec_named("h.0.attn.qkv.weight");
  const ShardLayout layout = shard_layout(spec, tiny_model(), 1, 2);
  const std::vector<LocalBlock> blocks = local_blocks(layout, 0, 24 * 16);
  ASSERT_EQ(blocks.size(), 3u);
  for (int part = 0; part < 3; ++part) {
    EXPECT_EQ(blocks[part].global.offset, (std::vector<int64_t>{16 * part + 8, 0}));
    EXPECT_EQ(blocks[part].global.count, (std::vector<int64_t>{8, 16}));
    EXPECT_EQ(blocks[part].local_offset, (std::vector<int64_t>{8 * part, 0}));
  }
}

TEST(LocalBlocks, VocabularyPaddingIsNotStored) {
  // vocab 63 over tp = 2 pads to 64: rank 1 holds rows 32..63 and one padding row.
  const ParamSpec spec = spec_named("wte");
  const ShardLayout layout = shard_layout(spec, tiny_model(), 1, 2);
  ASSERT_EQ(layout.local_shape, (std::vector<int64_t>{32, 16}));
  const std::vector<LocalBlock> blocks = local_blocks(layout, 0, 32 * 16);
  ASSERT_EQ(blocks.size(), 1u);
  EXPECT_EQ(blocks[0].global.offset, (std::vector<int64_t>{32, 0}));
  EXPECT_EQ(blocks[0].global.count, (std::vector<int64_t>{31, 16}));
}

TEST(LocalBlocks, ColumnSplitIsStridedInMemory) {
  // attn.proj is split by columns: rank 1 of 4 holds columns 4..8 of every row.
  const ParamSpec spec = spec_named("h.1.attn.proj.weight");
  const ShardLayout layout = shard_layout(spec, tiny_model(), 1, 4);
  const std::vector<LocalBlock> blocks = local_blocks(layout, 0, 16 * 4);
  ASSERT_EQ(blocks.size(), 1u);
  EXPECT_EQ(blocks[0].global.offset, (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(blocks[0].global.count, (std::vector<int64_t>{16, 4}));
  const MemoryRuns runs = memory_runs(layout, 0, blocks[0].local_offset, blocks[0].global.count);
  EXPECT_EQ(runs.start, 0);
  EXPECT_EQ(runs.stride, 4);
  EXPECT_EQ(runs.rows, 16);
  EXPECT_EQ(runs.cols, 4);
}

TEST(LocalBlocks, PartialRangeIsPartialRowWholeRowsPartialRow) {
  // A ZeRO-like range [21, 70) of a replicated [16, 16] matrix: row 1 from column 5, rows 2..3, row 4 to col 6.
  const ParamSpec spec = spec_named("wpe");
  const ShardLayout layout = shard_layout(spec, tiny_model(), 0, 1);
  const std::vector<LocalBlock> blocks = local_blocks(layout, 21, 70);
  ASSERT_EQ(blocks.size(), 3u);
  EXPECT_EQ(blocks[0].global, (Box{{1, 5}, {1, 11}}));
  EXPECT_EQ(blocks[1].global, (Box{{2, 0}, {2, 16}}));
  EXPECT_EQ(blocks[2].global, (Box{{4, 0}, {1, 6}}));
  const MemoryRuns first = memory_runs(layout, 21, blocks[0].local_offset, blocks[0].global.count);
  EXPECT_EQ(first.start, 0);
  const MemoryRuns last = memory_runs(layout, 21, blocks[2].local_offset, blocks[2].global.count);
  EXPECT_EQ(last.start, 64 - 21);
}

// The strongest check of the block math: for every parameter, TP size and many flat ranges, scattering the
// blocks' elements gives exactly what slice_global_to_local / scatter_local_to_global define.
TEST(LocalBlocks, CoverExactlyTheShardsElementsForEveryParameterAndRange) {
  const ModelConfig config = tiny_model();
  for (const ParamSpec& spec : gpt2_param_specs(config)) {
    for (int tp : {1, 2, 4}) {
      for (int rank = 0; rank < tp; ++rank) {
        const ShardLayout layout = shard_layout(spec, config, rank, tp);
        const int64_t n = testing::numel_of(layout.local_shape);
        std::vector<float> local(n);
        for (int64_t i = 0; i < n; ++i) local[i] = static_cast<float>(i + 1);
        std::vector<float> want(spec.numel(), 0.0f);
        scatter_local_to_global(spec, layout, local.data(), want.data());
        for (int64_t begin : {int64_t{0}, n / 3, n / 2 + 1}) {
          for (int64_t end : {n, n - 1, (n + begin) / 2}) {
            if (end < begin) continue;
            std::vector<float> got(spec.numel(), 0.0f);
            int64_t covered = 0;
            for (const LocalBlock& block : local_blocks(layout, begin, end)) {
              const MemoryRuns runs = memory_runs(layout, begin, block.local_offset, block.global.count);
              const int64_t cols = spec.shape.size() == 2 ? spec.shape[1] : spec.shape[0];
              for (int64_t r = 0; r < runs.rows; ++r) {
                for (int64_t c = 0; c < runs.cols; ++c) {
                  const int64_t g = spec.shape.size() == 2
                                        ? (block.global.offset[0] + r) * cols + block.global.offset[1] + c
                                        : block.global.offset[0] + c;
                  got[g] = local[begin + runs.start + r * runs.stride + c];
                  ++covered;
                }
              }
            }
            // The expected part: the elements of the range that are not padding.
            std::vector<float> range_want(spec.numel(), 0.0f);
            std::vector<float> masked(n, 0.0f);
            for (int64_t i = begin; i < end; ++i) masked[i] = local[i];
            scatter_local_to_global(spec, layout, masked.data(), range_want.data());
            int64_t nonzero = 0;
            for (float v : range_want) nonzero += v != 0.0f;
            EXPECT_EQ(got, range_want) << spec.name << " tp " << tp << " rank " << rank << " [" << begin << ", " << end
                                       << ")";
            EXPECT_EQ(covered, nonzero) << spec.name << ": an element covered twice or a padding row stored";
          }
        }
      }
    }
  }
}

// ---- who stores what ------------------------------------------------------------------------------------------

int stored_count(const std::vector<StatePiece>& pieces, StateKind kind) {
  int n = 0;
  for (const StatePiece& piece : pieces) n += piece.stored && piece.kind == kind;
  return n;
}

TEST(PlanStatePieces, OneReplicaOfEveryElement) {
  ShardState tp0(tiny_model(), 0, 2, 0.0f), tp1(tiny_model(), 1, 2, 0.0f);
  const int params = static_cast<int>(tp0.params.size());
  ReplicaRole dp0, dp1;
  dp1.dp_rank = 1;
  const std::vector<StatePiece> a = plan_state_pieces(tp0.params, tp0.optimizer_view(), dp0);
  ASSERT_EQ(a.size(), 3u * params);
  // TP rank 0 stores everything it holds; TP rank 1 only its split parameters; DP rank 1 nothing.
  EXPECT_EQ(stored_count(a, StateKind::kModel), params);
  EXPECT_EQ(stored_count(a, StateKind::kExpAvgSq), params);
  int split = 0;
  for (const LocalParam& p : tp1.params) split += p.spec.tp_split_dim >= 0;
  const std::vector<StatePiece> b = plan_state_pieces(tp1.params, tp1.optimizer_view(), dp0);
  EXPECT_EQ(stored_count(b, StateKind::kModel), split);
  EXPECT_EQ(stored_count(b, StateKind::kExpAvg), split);
  const std::vector<StatePiece> c = plan_state_pieces(tp0.params, tp0.optimizer_view(), dp1);
  EXPECT_EQ(stored_count(c, StateKind::kModel) + stored_count(c, StateKind::kExpAvg), 0);
}

TEST(PlanStatePieces, TiedEmbeddingIsStoredByTheFirstStageOnly) {
  ShardState state(tiny_model(), 0, 1, 0.0f);
  ReplicaRole last_stage;
  last_stage.first_pipeline_stage = false;
  for (const StatePiece& piece : plan_state_pieces(state.params, state.optimizer_view(), last_stage)) {
    EXPECT_EQ(piece.stored, state.params[piece.param].spec.name != "wte") << state.params[piece.param].spec.name;
  }
}

TEST(PlanStatePieces, ShardedOptimizerStateIsStoredByEveryDpRank) {
  ShardState state(tiny_model(), 0, 1, 0.0f);
  const int64_t n = static_cast<int64_t>(state.values.size());
  ReplicaRole role;
  role.dp_rank = 1;
  role.optimizer_sharded = true;
  // DP rank 1 of 2 owns the second half of the flat buffer.
  const std::vector<StatePiece> pieces = plan_state_pieces(state.params, state.optimizer_view(n / 2, n), role);
  int64_t moments = 0;
  for (const StatePiece& piece : pieces) {
    if (piece.kind == StateKind::kModel) {
      EXPECT_FALSE(piece.stored);
      continue;
    }
    EXPECT_TRUE(piece.stored);
    EXPECT_EQ(piece.memory.numel(), piece.end - piece.begin);
    moments += piece.end - piece.begin;
  }
  EXPECT_EQ(moments, 2 * (n - n / 2));
}

// ---- read plans and tiling -------------------------------------------------------------------------------------

// The manifest a layout (tp, 1, dp) would write, without writing anything.
checkpoint::Manifest manifest_of(int tp, int dp) {
  checkpoint::Manifest manifest;
  for (int d = 0; d < dp; ++d) {
    for (int t = 0; t < tp; ++t) {
      ShardState state(tiny_model(), t, tp, 0.0f);
      ReplicaRole role;
      role.dp_rank = d;
      const std::vector<StatePiece> pieces = plan_state_pieces(state.params, state.optimizer_view(), role);
      checkpoint::Shard* shard = manifest.add_shards();
      shard->mutable_file()->set_file("shard_" + std::to_string(d * tp + t) + ".h5");
      for (const SliceWrite& write : plan_slice_writes(state.params, pieces)) *shard->add_tensors() = write.slice;
    }
  }
  return manifest;
}

TEST(Tiling, EveryLayoutTilesEveryTensorOnce) {
  for (auto [tp, dp] : {std::pair{1, 1}, {2, 1}, {4, 1}, {2, 2}, {1, 4}}) {
    const checkpoint::Manifest manifest = manifest_of(tp, dp);
    EXPECT_TRUE(tiling_problems(manifest).empty()) << "tp " << tp << " dp " << dp;
  }
}

TEST(Tiling, FindsOverlapsGapsAndMissingKinds) {
  checkpoint::Manifest overlap = manifest_of(2, 1);
  *overlap.mutable_shards(1)->add_tensors() = overlap.shards(0).tensors(0);
  std::vector<std::string> problems = tiling_problems(overlap);
  ASSERT_FALSE(problems.empty());
  EXPECT_NE(problems[0].find("overlap"), std::string::npos) << problems[0];

  checkpoint::Manifest gap = manifest_of(2, 1);
  gap.mutable_shards()->RemoveLast();
  problems = tiling_problems(gap);
  ASSERT_FALSE(problems.empty());
  EXPECT_NE(problems[0].find("a shard is missing"), std::string::npos) << problems[0];

  checkpoint::Manifest outside = manifest_of(1, 1);
  outside.mutable_shards(0)->mutable_tensors(0)->set_offset(0, 1);
  problems = tiling_problems(outside);
  ASSERT_FALSE(problems.empty());
  EXPECT_NE(problems[0].find("not inside"), std::string::npos) << problems[0];

  const checkpoint::Manifest full = manifest_of(1, 1);
  checkpoint::Manifest no_moments;
  for (const checkpoint::TensorSlice& slice : full.shards(0).tensors()) {
    if (slice.kind() == checkpoint::MODEL) *no_moments.add_shards()->add_tensors() = slice;
  }
  problems = tiling_problems(no_moments);
  ASSERT_FALSE(problems.empty());
  EXPECT_NE(problems[0].find("optim/exp_avg/"), std::string::npos) << problems[0];
}

TEST(PlanSliceReads, EveryPieceIsCoveredFromAnyLayout) {
  for (auto [save_tp, save_dp] : {std::pair{1, 1}, {2, 2}, {4, 1}}) {
    const checkpoint::Manifest manifest = manifest_of(save_tp, save_dp);
    for (int tp : {1, 2, 4}) {
      for (int rank = 0; rank < tp; ++rank) {
        ShardState state(tiny_model(), rank, tp, 0.0f);
        const std::vector<StatePiece> pieces = plan_state_pieces(state.params, state.optimizer_view(), {});
        // plan_slice_reads throws unless every element of every piece is covered exactly.
        const std::vector<SliceRead> reads = plan_slice_reads(state.params, pieces, manifest, "test");
        EXPECT_FALSE(reads.empty());
      }
    }
  }
}

TEST(PlanSliceReads, NamesAMissingTensorAndAWrongShape) {
  ShardState state(tiny_model(), 0, 1, 0.0f);
  const std::vector<StatePiece> pieces = plan_state_pieces(state.params, state.optimizer_view(), {});
  checkpoint::Manifest missing = manifest_of(1, 1);
  auto* tensors = missing.mutable_shards(0)->mutable_tensors();
  for (int i = 0; i < tensors->size(); ++i) {
    if (tensors->Get(i).name() == "lnf.bias" && tensors->Get(i).kind() == checkpoint::EXP_AVG) {
      tensors->DeleteSubrange(i, 1);
      break;
    }
  }
  std::string message =
      error_message<CheckpointError>([&] { plan_slice_reads(state.params, pieces, missing, "step_00000003"); });
  EXPECT_NE(message.find("step_00000003 has no tensor optim/exp_avg/lnf.bias"), std::string::npos) << message;

  checkpoint::Manifest other_shape = manifest_of(1, 1);
  for (auto& slice : *other_shape.mutable_shards(0)->mutable_tensors()) {
    if (slice.name() == "wpe") slice.set_global_shape(0, 32);
  }
  message = error_message<CheckpointError>([&] { plan_slice_reads(state.params, pieces, other_shape, "ckpt"); });
  EXPECT_NE(message.find("model/wpe has global shape [32, 16], the model expects [16, 16]"), std::string::npos)
      << message;
}

}  // namespace
}  // namespace tessera

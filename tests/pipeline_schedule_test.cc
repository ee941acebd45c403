// Pipeline schedules and layer splits: table checks, and a simulation of every stage running its table with
// blocking receives, which must finish (no deadlock) and respect the data dependencies.
#include "parallel/pipeline_schedule.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <tuple>

namespace tessera {
namespace {

TEST(PipelineSchedule, OneFOneBTables) {
  EXPECT_EQ(schedule_to_string(pipeline_schedule(PipelineKind::kOneFOneB, 1, 0, 3)), "F0 B0 F1 B1 F2 B2");
  EXPECT_EQ(schedule_to_string(pipeline_schedule(PipelineKind::kOneFOneB, 2, 0, 4)), "F0 F1 B0 F2 B1 F3 B2 B3");
  EXPECT_EQ(schedule_to_string(pipeline_schedule(PipelineKind::kOneFOneB, 2, 1, 4)), "F0 B0 F1 B1 F2 B2 F3 B3");
  EXPECT_EQ(schedule_to_string(pipeline_schedule(PipelineKind::kOneFOneB, 4, 0, 4)), "F0 F1 F2 F3 B0 B1 B2 B3");
  EXPECT_EQ(schedule_to_string(pipeline_schedule(PipelineKind::kOneFOneB, 4, 1, 4)), "F0 F1 F2 B0 F3 B1 B2 B3");
  EXPECT_EQ(schedule_to_string(pipeline_schedule(PipelineKind::kOneFOneB, 4, 3, 2)), "F0 B0 F1 B1");
  // Fewer micro-batches than stages: the warm-up is cut short.
  EXPECT_EQ(schedule_to_string(pipeline_schedule(PipelineKind::kOneFOneB, 4, 0, 2)), "F0 F1 B0 B1");
}

TEST(PipelineSchedule, GPipeTables) {
  EXPECT_EQ(schedule_to_string(pipeline_schedule(PipelineKind::kGPipe, 3, 1, 3)), "F0 F1 F2 B0 B1 B2");
}

TEST(PipelineSchedule, InFlightBoundedByDepthFor1F1B) {
  for (int p = 1; p <= 6; ++p)
    for (int s = 0; s < p; ++s)
      for (int m = 1; m <= 9; ++m) {
        EXPECT_EQ(pipeline_in_flight(PipelineKind::kOneFOneB, p, s, m), std::min(p - s, m)) << p << " " << s << " " << m;
        EXPECT_EQ(pipeline_in_flight(PipelineKind::kGPipe, p, s, m), m);
      }
}

// Runs every stage's table as the trainer does: a forward on s > 0 blocks until s - 1 has finished that
// forward; a backward on s < p - 1 blocks until s + 1 has finished that backward. Sends never block.
// Returns false on deadlock. Also checks each micro-batch runs forward then backward exactly once per stage.
bool simulate(PipelineKind kind, int p, int M, std::string* trace) {
  std::vector<std::vector<PipelineAction>> tables;
  for (int s = 0; s < p; ++s) tables.push_back(pipeline_schedule(kind, p, s, M));
  std::vector<size_t> next(p, 0);
  std::map<std::tuple<int, int, bool>, bool> done;  // (stage, micro-batch, forward)
  bool progress = true;
  while (progress) {
    progress = false;
    for (int s = 0; s < p; ++s) {
      if (next[s] == tables[s].size()) continue;
      const PipelineAction a = tables[s][next[s]];
      bool ready = a.forward ? (s == 0 || done[{s - 1, a.micro_batch, true}])
                             : (done[{s, a.micro_batch, true}] && (s == p - 1 || done[{s + 1, a.micro_batch, false}]));
      if (!ready) continue;
      EXPECT_FALSE((done[{s, a.micro_batch, a.forward}])) << "twice: stage " << s;
      done[{s, a.micro_batch, a.forward}] = true;
      *trace += "s" + std::to_string(s) + (a.forward ? "F" : "B") + std::to_string(a.micro_batch) + " ";
      ++next[s];
      progress = true;
    }
  }
  for (int s = 0; s < p; ++s) {
    if (next[s] != tables[s].size()) return false;
    for (int m = 0; m < M; ++m) {
      EXPECT_TRUE((done[{s, m, true}] && done[{s, m, false}]));
    }
  }
  return true;
}

TEST(PipelineSchedule, EveryScheduleCompletesWithoutDeadlock) {
  for (PipelineKind kind : {PipelineKind::kOneFOneB, PipelineKind::kGPipe})
    for (int p = 1; p <= 5; ++p)
      for (int m = 1; m <= 8; ++m) {
        std::string trace;
        EXPECT_TRUE(simulate(kind, p, m, &trace)) << "p=" << p << " m=" << m << ": " << trace;
      }
}

TEST(SplitLayers, EvenAndUnevenSplits) {
  using R = std::vector<std::pair<int, int>>;
  EXPECT_EQ(split_layers(12, 1), (R{{0, 12}}));
  EXPECT_EQ(split_layers(12, 4), (R{{0, 3}, {3, 6}, {6, 9}, {9, 12}}));
  EXPECT_EQ(split_layers(5, 2), (R{{0, 3}, {3, 5}}));
  EXPECT_EQ(split_layers(7, 3), (R{{0, 3}, {3, 5}, {5, 7}}));
}

TEST(SplitLayers, EmbeddingAndHeadAsStagesOfTheirOwn) {
  using R = std::vector<std::pair<int, int>>;
  // 2 blocks over 4 stages: [embedding] [block 0] [block 1] [head].
  EXPECT_EQ(split_layers(2, 4), (R{{0, 0}, {0, 1}, {1, 2}, {2, 2}}));
  // 2 blocks over 3 stages: [embedding, block 0] [block 1] [head].
  EXPECT_EQ(split_layers(2, 3), (R{{0, 1}, {1, 2}, {2, 2}}));
  EXPECT_EQ(split_layers(1, 3), (R{{0, 0}, {0, 1}, {1, 1}}));
}

}  // namespace
}  // namespace tessera

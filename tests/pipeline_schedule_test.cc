// Pipeline schedules and layer splits: table checks, and a simulation of every stage running its table with
// blocking receives, which must finish (no deadlock) and respect the data dependencies.
#include "parallel/pipeline_schedule.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
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

// ---- interleaved 1F1B (Note [Interleaved 1F1B]) ----

// The (p, V, M) the interleaved tests cover: M a multiple of p, from one group to several.
std::vector<std::tuple<int, int, int>> interleaved_cases() {
  std::vector<std::tuple<int, int, int>> cases;
  for (int p = 2; p <= 5; ++p)
    for (int V = 2; V <= 4; ++V)
      for (int groups = 1; groups <= 4; ++groups) cases.emplace_back(p, V, groups * p);
  return cases;
}

TEST(InterleavedSchedule, Tables) {
  // p = 2, V = 2, M = 4. Rank 0: warm-up 2 (2 - 0 - 1) + (2 - 1) 2 = 4 chunk forwards, micro-batches 0 and 1
  // through chunk 0, then through chunk 1; backwards run chunk 1 before chunk 0 in each group.
  EXPECT_EQ(schedule_to_string(pipeline_schedule(PipelineKind::kOneFOneB, 2, 0, 4, 2)),
            "F0 F1 F0c1 F1c1 F2 B0c1 F3 B1c1 F2c1 B0 F3c1 B1 B2c1 B3c1 B2 B3");
  // Rank 1: warm-up (2 - 1) 2 = 2.
  EXPECT_EQ(schedule_to_string(pipeline_schedule(PipelineKind::kOneFOneB, 2, 1, 4, 2)),
            "F0 F1 F0c1 B0c1 F1c1 B1c1 F2 B0 F3 B1 F2c1 B2c1 F3c1 B3c1 B2 B3");
  // p = 2, M = 2: rank 0's warm-up 2 + 2 is every chunk forward (M V = 4): no steady state.
  EXPECT_EQ(schedule_to_string(pipeline_schedule(PipelineKind::kOneFOneB, 2, 0, 2, 2)),
            "F0 F1 F0c1 F1c1 B0c1 B1c1 B0 B1");
}

TEST(InterleavedSchedule, VirtualStageOneIsOneFOneB) {
  for (int p = 1; p <= 5; ++p)
    for (int s = 0; s < p; ++s)
      for (int m = 1; m <= 9; ++m) {
        for (PipelineKind kind : {PipelineKind::kOneFOneB, PipelineKind::kGPipe}) {
          const auto table = pipeline_schedule(kind, p, s, m, 1);
          const int in_flight = pipeline_in_flight(kind, p, s, m);
          // The slot of micro-batch m is m % in-flight: what the executor used before slots were assigned.
          for (const PipelineAction& a : table) {
            EXPECT_EQ(a.chunk, 0);
            EXPECT_EQ(a.slot, a.micro_batch % in_flight) << p << " " << s << " " << m;
          }
        }
      }
}

TEST(InterleavedSchedule, EveryChunkStepOnceBackwardAfterForward) {
  for (const auto& [p, V, M] : interleaved_cases())
    for (int s = 0; s < p; ++s) {
      const auto table = pipeline_schedule(PipelineKind::kOneFOneB, p, s, M, V);
      ASSERT_EQ(table.size(), static_cast<size_t>(2 * M * V));
      std::map<std::tuple<int, int, bool>, int> seen;  // (chunk, micro-batch, forward) -> index
      for (int i = 0; i < static_cast<int>(table.size()); ++i) {
        const PipelineAction& a = table[i];
        ASSERT_TRUE(a.chunk >= 0 && a.chunk < V && a.micro_batch >= 0 && a.micro_batch < M);
        const std::tuple<int, int, bool> key{a.chunk, a.micro_batch, a.forward};
        EXPECT_EQ(seen.count(key), 0u) << "twice: p=" << p << " V=" << V;
        seen[key] = i;
        if (!a.forward) {
          ASSERT_EQ(seen.count(std::make_tuple(a.chunk, a.micro_batch, true)), 1u) << "backward before forward";
          // The backward finds its activations in the slot its forward used.
          const int forward_at = seen[{a.chunk, a.micro_batch, true}];
          EXPECT_EQ(table[forward_at].slot, a.slot);
        }
      }
      EXPECT_EQ(seen.size(), static_cast<size_t>(2 * M * V));
    }
}

TEST(InterleavedSchedule, InFlightBound) {
  for (const auto& [p, V, M] : interleaved_cases())
    for (int s = 0; s < p; ++s) {
      // At most warm-up + 1 chunk activations in flight (one more forward before the first backward), each in a
      // slot of its own: no two live micro-batch chunks share a slot.
      const int warmup = std::min(2 * (p - s - 1) + (V - 1) * p, M * V);
      const int in_flight = pipeline_in_flight(PipelineKind::kOneFOneB, p, s, M, V);
      EXPECT_EQ(in_flight, std::min(warmup + 1, M * V)) << "p=" << p << " V=" << V << " M=" << M << " s=" << s;
      std::map<int, std::pair<int, int>> holder;  // slot -> (chunk, micro-batch)
      for (const PipelineAction& a : pipeline_schedule(PipelineKind::kOneFOneB, p, s, M, V)) {
        ASSERT_TRUE(a.slot >= 0 && a.slot < in_flight);
        if (a.forward) {
          EXPECT_EQ(holder.count(a.slot), 0u) << "slot " << a.slot << " still held";
          holder[a.slot] = {a.chunk, a.micro_batch};
        } else {
          EXPECT_EQ(holder[a.slot], std::make_pair(a.chunk, a.micro_batch));
          holder.erase(a.slot);
        }
      }
    }
}

// Runs every rank's table as PipelineExecutor does, with virtual stage v = chunk * p + s:
//   forward: waits until the activation send of the slot's previous micro-batch chunk is received (the
//     receiver has posted that receive), then posts its receive and waits for v - 1's forward (v > 0);
//   backward: posts its receive and waits for v + 1's backward (v < P - 1), then waits until its previous
//     gradient send is received (the model's input-gradient buffer is reused).
// A send completes once the receiver has posted the matching receive, as MPI's rendezvous sends do; sends are
// otherwise asynchronous. `forwards_only` runs the evaluation table (the forwards, round-robin slots). Returns
// false on deadlock.
bool simulate_interleaved(int p, int V, int M, bool forwards_only, std::string* trace) {
  const int P = p * V;
  std::vector<std::vector<PipelineAction>> tables;
  for (int s = 0; s < p; ++s) {
    std::vector<PipelineAction> table = pipeline_schedule(PipelineKind::kOneFOneB, p, s, M, V);
    if (forwards_only) {
      const int slots = pipeline_in_flight(PipelineKind::kOneFOneB, p, s, M, V);
      std::vector<PipelineAction> forwards;
      for (const PipelineAction& a : table)
        if (a.forward) {
          forwards.push_back(a);
          forwards.back().slot = static_cast<int>(forwards.size() - 1) % slots;
        }
      table = forwards;
    }
    tables.push_back(table);
  }
  using Key = std::tuple<bool, int, int>;  // (forward, virtual stage, micro-batch)
  std::set<Key> posted, done;
  std::vector<size_t> next(p, 0);
  std::vector<bool> receive_posted(p, false);
  std::vector<std::map<int, Key>> slot_send(p);  // slot -> the receive its last activation send waits for
  std::vector<std::optional<Key>> grad_send(p);
  bool progress = true;
  while (progress) {
    progress = false;
    for (int s = 0; s < p; ++s) {
      if (next[s] == tables[s].size()) continue;
      const PipelineAction a = tables[s][next[s]];
      const int v = a.chunk * p + s;
      if (a.forward) {
        if (!receive_posted[s]) {
          auto it = slot_send[s].find(a.slot);
          if (it != slot_send[s].end() && !posted.count(it->second)) continue;
          posted.insert({true, v, a.micro_batch});
          receive_posted[s] = true;
          progress = true;
        }
        if (v > 0 && !done.count({true, v - 1, a.micro_batch})) continue;
        if (v < P - 1) slot_send[s][a.slot] = {true, v + 1, a.micro_batch};
      } else {
        if (!receive_posted[s]) {
          posted.insert({false, v, a.micro_batch});
          receive_posted[s] = true;
          progress = true;
        }
        if (v < P - 1 && !done.count({false, v + 1, a.micro_batch})) continue;
        if (grad_send[s] && !posted.count(*grad_send[s])) continue;
        EXPECT_TRUE(done.count({true, v, a.micro_batch})) << "backward before forward";
        if (v > 0) grad_send[s] = Key{false, v - 1, a.micro_batch};
      }
      done.insert({a.forward, v, a.micro_batch});
      *trace += "v" + std::to_string(v) + (a.forward ? "F" : "B") + std::to_string(a.micro_batch) + " ";
      ++next[s];
      receive_posted[s] = false;
      progress = true;
    }
  }
  for (int s = 0; s < p; ++s)
    if (next[s] != tables[s].size()) return false;
  return true;
}

TEST(InterleavedSchedule, CompletesWithoutDeadlock) {
  for (const auto& [p, V, M] : interleaved_cases())
    for (bool forwards_only : {false, true}) {
      std::string trace;
      EXPECT_TRUE(simulate_interleaved(p, V, M, forwards_only, &trace))
          << "p=" << p << " V=" << V << " M=" << M << (forwards_only ? " eval" : "") << ": " << trace;
    }
  // The same model of the executor holds the plain 1F1B tables (V = 1) deadlock-free too.
  for (int p = 1; p <= 5; ++p)
    for (int M = 1; M <= 8; ++M) {
      std::string trace;
      EXPECT_TRUE(simulate_interleaved(p, 1, M, false, &trace)) << "p=" << p << " M=" << M << ": " << trace;
    }
}

// NCCL matches point-to-point messages between two ranks in the order they are posted, not by tag: for every
// ordered pair of ranks, the messages the sender's table sends must be the ones the receiver's table receives,
// in the same order (activations of virtual stage v to v + 1, gradients of v to v - 1; with pp = 2 both kinds
// share each direction).
TEST(InterleavedSchedule, MessagesBetweenTwoRanksMatchInOrder) {
  std::vector<std::tuple<int, int, int>> cases = interleaved_cases();
  for (int p = 1; p <= 5; ++p)
    for (int M = 1; M <= 8; ++M) cases.emplace_back(p, 1, M);
  for (const auto& [p, V, M] : cases) {
    const int P = p * V;
    using Message = std::tuple<bool, int, int>;  // (activation, receiving virtual stage, micro-batch)
    std::map<std::pair<int, int>, std::vector<Message>> sent, received;  // (from rank, to rank) -> messages
    for (int s = 0; s < p; ++s) {
      const int prev = (s + p - 1) % p, next = (s + 1) % p;
      for (const PipelineAction& a : pipeline_schedule(PipelineKind::kOneFOneB, p, s, M, V)) {
        const int v = a.chunk * p + s;
        if (a.forward) {
          if (v > 0) received[{prev, s}].emplace_back(true, v, a.micro_batch);
          if (v < P - 1) sent[{s, next}].emplace_back(true, v + 1, a.micro_batch);
        } else {
          if (v < P - 1) received[{next, s}].emplace_back(false, v, a.micro_batch);
          if (v > 0) sent[{s, prev}].emplace_back(false, v - 1, a.micro_batch);
        }
      }
    }
    EXPECT_EQ(sent, received) << "p=" << p << " V=" << V << " M=" << M;
  }
}

// The pipeline bubble: every rank runs its table as soon as the data dependencies allow, a micro-batch's
// forward through a whole rank takes 1 time unit and its backward 2 (a chunk's 1/V and 2/V). Each rank is busy
// 3 M units; the bubble is the makespan less that.
double bubble_time(int p, int V, int M) {
  const int P = p * V;
  std::vector<std::vector<PipelineAction>> tables;
  for (int s = 0; s < p; ++s) tables.push_back(pipeline_schedule(PipelineKind::kOneFOneB, p, s, M, V));
  std::map<std::tuple<bool, int, int>, double> finished;
  std::vector<double> clock(p, 0.0);
  std::vector<size_t> next(p, 0);
  bool progress = true;
  while (progress) {
    progress = false;
    for (int s = 0; s < p; ++s) {
      while (next[s] < tables[s].size()) {
        const PipelineAction& a = tables[s][next[s]];
        const int v = a.chunk * p + s;
        double ready = clock[s];
        if (a.forward && v > 0) {
          auto it = finished.find({true, v - 1, a.micro_batch});
          if (it == finished.end()) break;
          ready = std::max(ready, it->second);
        }
        if (!a.forward && v < P - 1) {
          auto it = finished.find({false, v + 1, a.micro_batch});
          if (it == finished.end()) break;
          ready = std::max(ready, it->second);
        }
        clock[s] = ready + (a.forward ? 1.0 : 2.0) / V;
        finished[{a.forward, v, a.micro_batch}] = clock[s];
        ++next[s];
        progress = true;
      }
    }
  }
  return *std::max_element(clock.begin(), clock.end()) - 3.0 * M;
}

// The idle fraction of each rank's time line.
double bubble_fraction(int p, int V, int M) { return bubble_time(p, V, M) / (3.0 * M + bubble_time(p, V, M)); }

TEST(InterleavedSchedule, BubbleFallsByV) {
  // Measured: the bubble is 3 (p - 1) / V time units, V times 1F1B's 3 (p - 1). Idle fractions:
  //   p=2 M=8: V=1 0.111, V=2 0.059, V=4 0.030;   p=4 M=8: V=1 0.273, V=2 0.158, V=4 0.086;
  //   p=4 M=16: V=1 0.158, V=2 0.086, V=4 0.045.
  const std::vector<std::tuple<int, int, double>> cases = {{2, 8, 0.111}, {4, 8, 0.273}, {4, 16, 0.158}};
  for (const auto& [p, M, v1] : cases) {
    EXPECT_NEAR(bubble_fraction(p, 1, M), v1, 0.001) << "p=" << p << " M=" << M;
    EXPECT_NEAR(bubble_time(p, 1, M), 3.0 * (p - 1), 1e-9);
    for (int V : {2, 3, 4}) {
      EXPECT_NEAR(bubble_time(p, V, M), bubble_time(p, 1, M) / V, 1e-9) << "p=" << p << " V=" << V << " M=" << M;
    }
  }
  EXPECT_NEAR(bubble_fraction(2, 2, 8), 0.059, 0.001);
  EXPECT_NEAR(bubble_fraction(4, 2, 8), 0.158, 0.001);
  EXPECT_NEAR(bubble_fraction(4, 4, 16), 0.045, 0.001);
}

TEST(InterleavedSchedule, RankChunks) {
  using R = std::vector<std::pair<int, int>>;
  // 8 blocks, p = 2, V = 2: virtual stages [0,2) [2,4) [4,6) [6,8); rank 0 holds 0 and 2, rank 1 holds 1 and 3.
  EXPECT_EQ(rank_chunks(8, 2, 0, 2), (R{{0, 2}, {4, 6}}));
  EXPECT_EQ(rank_chunks(8, 2, 1, 2), (R{{2, 4}, {6, 8}}));
  // 2 blocks over 4 virtual stages: [embedding] [block 0] [block 1] [head].
  EXPECT_EQ(rank_chunks(2, 2, 0, 2), (R{{0, 0}, {1, 2}}));
  EXPECT_EQ(rank_chunks(2, 2, 1, 2), (R{{0, 1}, {2, 2}}));
  EXPECT_EQ(rank_chunks(12, 3, 1, 1), (R{{4, 8}}));
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

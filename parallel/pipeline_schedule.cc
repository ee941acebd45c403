// Pipeline schedule tables.
#include "parallel/pipeline_schedule.h"

#include <algorithm>

#include "core/check.h"

namespace tessera {

namespace {

// Gives each forward the lowest slot no earlier micro-batch chunk still holds, and each backward the slot of
// its forward. For 1F1B and GPipe the micro-batches in flight are always a run of consecutive ones, so this is
// micro_batch % in-flight count, the slot the executor used before slots were assigned here.
void assign_slots(std::vector<PipelineAction>& actions, int virtual_stages, int micro_batches) {
  std::vector<int> slot_of(static_cast<size_t>(virtual_stages * micro_batches), -1);
  std::vector<bool> busy;
  for (PipelineAction& a : actions) {
    int& slot = slot_of[static_cast<size_t>(a.chunk * micro_batches + a.micro_batch)];
    if (a.forward) {
      slot = static_cast<int>(std::find(busy.begin(), busy.end(), false) - busy.begin());
      if (slot == static_cast<int>(busy.size())) busy.push_back(false);
      busy[slot] = true;
    } else {
      TS_ASSERT(slot >= 0, "backward before forward in a pipeline table");
      busy[slot] = false;
    }
    a.slot = slot;
  }
}

// The k-th forward (or backward) chunk step of the interleaved schedule (Note [Interleaved 1F1B]).
PipelineAction interleaved_step(bool forward, int k, int stages, int virtual_stages) {
  const int group = k / (stages * virtual_stages), r = k % (stages * virtual_stages);
  const int chunk = forward ? r / stages : virtual_stages - 1 - r / stages;
  return {forward, group * stages + r % stages, chunk, 0};
}

}  // namespace

std::vector<PipelineAction> pipeline_schedule(PipelineKind kind, int stages, int stage, int micro_batches,
                                              int virtual_stages) {
  TS_ASSERT(stages >= 1 && stage >= 0 && stage < stages && micro_batches >= 1 && virtual_stages >= 1,
            "bad schedule arguments");
  std::vector<PipelineAction> actions;
  const int M = micro_batches;
  if (virtual_stages > 1) {
    TS_ASSERT(kind == PipelineKind::kOneFOneB && stages > 1 && M % stages == 0, "interleaved schedule of ", M,
              " micro-batches over ", stages, " stages");
    const int V = virtual_stages, steps = M * V;
    const int warmup = std::min(2 * (stages - stage - 1) + (V - 1) * stages, steps);
    for (int k = 0; k < warmup; ++k) actions.push_back(interleaved_step(true, k, stages, V));
    for (int i = 0; i < steps - warmup; ++i) {
      actions.push_back(interleaved_step(true, warmup + i, stages, V));
      actions.push_back(interleaved_step(false, i, stages, V));
    }
    for (int i = steps - warmup; i < steps; ++i) actions.push_back(interleaved_step(false, i, stages, V));
  } else if (kind == PipelineKind::kGPipe) {
    for (int m = 0; m < M; ++m) actions.push_back({true, m});
    for (int m = 0; m < M; ++m) actions.push_back({false, m});
  } else {
    const int warmup = std::min(stages - stage - 1, M);
    int next_forward = 0, next_backward = 0;
    for (int i = 0; i < warmup; ++i) actions.push_back({true, next_forward++});
    while (next_forward < M) {
      actions.push_back({true, next_forward++});
      actions.push_back({false, next_backward++});
    }
    while (next_backward < M) actions.push_back({false, next_backward++});
  }
  assign_slots(actions, virtual_stages, M);
  return actions;
}

int pipeline_in_flight(PipelineKind kind, int stages, int stage, int micro_batches, int virtual_stages) {
  int most = 0;
  for (const PipelineAction& a : pipeline_schedule(kind, stages, stage, micro_batches, virtual_stages)) {
    most = std::max(most, a.slot + 1);
  }
  return most;
}

std::string schedule_to_string(const std::vector<PipelineAction>& actions) {
  std::string s;
  for (const PipelineAction& a : actions) {
    s += (s.empty() ? "" : " ") + std::string(a.forward ? "F" : "B") + std::to_string(a.micro_batch);
    if (a.chunk > 0) s += "c" + std::to_string(a.chunk);
  }
  return s;
}

std::vector<std::pair<int, int>> split_layers(int n_layer, int stages) {
  TS_ASSERT(stages >= 1 && n_layer + 2 >= stages, n_layer, " layers over ", stages, " stages");
  std::vector<std::pair<int, int>> ranges;
  const bool units_with_ends = n_layer < stages;
  const int units = units_with_ends ? n_layer + 2 : n_layer;
  const int base = units / stages, extra = units % stages;
  int first_unit = 0;
  for (int s = 0; s < stages; ++s) {
    int count = base + (s < extra ? 1 : 0);
    int first = first_unit, end = first_unit + count;
    if (units_with_ends) {
      // Unit 0 is the embedding, units 1..n_layer the blocks, unit n_layer + 1 the head.
      first = std::clamp(first - 1, 0, n_layer);
      end = std::clamp(end - 1, 0, n_layer);
    }
    ranges.emplace_back(first, end);
    first_unit += count;
  }
  return ranges;
}

std::vector<std::pair<int, int>> rank_chunks(int n_layer, int stages, int stage, int virtual_stages) {
  TS_ASSERT(stage >= 0 && stage < stages && virtual_stages >= 1, "chunks of stage ", stage, " of ", stages);
  const auto all = split_layers(n_layer, stages * virtual_stages);
  std::vector<std::pair<int, int>> chunks;
  for (int c = 0; c < virtual_stages; ++c) chunks.push_back(all[static_cast<size_t>(c * stages + stage)]);
  return chunks;
}

}  // namespace tessera

// Pipeline schedule tables.
#include "parallel/pipeline_schedule.h"

#include <algorithm>

#include "core/check.h"

namespace tessera {

std::vector<PipelineAction> pipeline_schedule(PipelineKind kind, int stages, int stage, int micro_batches) {
  TS_ASSERT(stages >= 1 && stage >= 0 && stage < stages && micro_batches >= 1, "bad schedule arguments");
  std::vector<PipelineAction> actions;
  const int M = micro_batches;
  if (kind == PipelineKind::kGPipe) {
    for (int m = 0; m < M; ++m) actions.push_back({true, m});
    for (int m = 0; m < M; ++m) actions.push_back({false, m});
    return actions;
  }
  const int warmup = std::min(stages - stage - 1, M);
  int next_forward = 0, next_backward = 0;
  for (int i = 0; i < warmup; ++i) actions.push_back({true, next_forward++});
  while (next_forward < M) {
    actions.push_back({true, next_forward++});
    actions.push_back({false, next_backward++});
  }
  while (next_backward < M) actions.push_back({false, next_backward++});
  return actions;
}

int pipeline_in_flight(PipelineKind kind, int stages, int stage, int micro_batches) {
  int in_flight = 0, most = 0;
  for (const PipelineAction& a : pipeline_schedule(kind, stages, stage, micro_batches)) {
    in_flight += a.forward ? 1 : -1;
    most = std::max(most, in_flight);
  }
  return most;
}

std::string schedule_to_string(const std::vector<PipelineAction>& actions) {
  std::string s;
  for (const PipelineAction& a : actions) s += (s.empty() ? "" : " ") + std::string(a.forward ? "F" : "B") + std::to_string(a.micro_batch);
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

}  // namespace tessera

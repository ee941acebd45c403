// Pipeline schedules as pure functions: which micro-batch each stage runs forward or backward, in order.
//
// 1F1B (PipeDream-Flush, the Megatron default): stage s of p first runs w = min(p - s - 1, M) forwards
// (warm-up), then alternates one forward and one backward until every forward has run, then runs the
// remaining w backwards (cool-down). At most min(p - s, M) micro-batches are in flight on stage s, so
// activation memory is bounded by the pipeline depth instead of the number of micro-batches.
// GPipe: every forward, then every backward (M micro-batches in flight); the simple reference.
//
// Communication follows from the table: a forward on stage s > 0 first receives the micro-batch's input
// from s - 1, a forward on s < p - 1 then sends its output to s + 1; a backward on s < p - 1 first receives
// the output gradient from s + 1, a backward on s > 0 then sends the input gradient to s - 1.
#pragma once

#include <string>
#include <vector>

namespace tessera {

enum class PipelineKind { kOneFOneB, kGPipe };

struct PipelineAction {
  bool forward = true;
  int micro_batch = 0;
  bool operator==(const PipelineAction& o) const { return forward == o.forward && micro_batch == o.micro_batch; }
};

// The actions of `stage` (0-based, of `stages`) for one optimizer step of `micro_batches`.
std::vector<PipelineAction> pipeline_schedule(PipelineKind kind, int stages, int stage, int micro_batches);

// The most micro-batches whose activations `stage` holds at once under the schedule.
int pipeline_in_flight(PipelineKind kind, int stages, int stage, int micro_batches);

// "F0 F1 B0 F2 B1 B2": for logs and test failure messages.
std::string schedule_to_string(const std::vector<PipelineAction>& actions);

// The blocks of each stage, [first, end) per stage; the first stage also holds the embedding, the last the
// final norm and output head.
// - stages <= n_layer: the blocks split as evenly as possible, earlier stages taking one extra block when it
//   does not divide;
// - n_layer < stages <= n_layer + 2: the embedding and the head count as one unit each, and the n_layer + 2
//   units split evenly, so the first and/or last stage may hold no block (e.g. 2 blocks over 4 stages:
//   [embedding] [block 0] [block 1] [head]).
std::vector<std::pair<int, int>> split_layers(int n_layer, int stages);

}  // namespace tessera

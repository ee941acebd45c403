// Pipeline schedules as pure functions: which micro-batch each stage runs forward or backward, in order.
//
// 1F1B (PipeDream-Flush, the Megatron default): stage s of p first runs w = min(p - s - 1, M) forwards
// (warm-up), then alternates one forward and one backward until every forward has run, then runs the
// remaining w backwards (cool-down). At most min(p - s, M) micro-batches are in flight on stage s, so
// activation memory is bounded by the pipeline depth instead of the number of micro-batches.
// GPipe: every forward, then every backward (M micro-batches in flight); the simple reference.
// Interleaved 1F1B (virtual stages, Note [Interleaved 1F1B]): each rank runs V model chunks.
//
// Communication follows from the table: a forward on stage s > 0 first receives the micro-batch's input
// from s - 1, a forward on s < p - 1 then sends its output to s + 1; a backward on s < p - 1 first receives
// the output gradient from s + 1, a backward on s > 0 then sends the input gradient to s - 1. With virtual
// stages "stage" reads "virtual stage" (chunk c of rank s is virtual stage c * p + s), whose neighbours live on
// ranks (s - 1) mod p and (s + 1) mod p.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace tessera {

enum class PipelineKind { kOneFOneB, kGPipe };

// Note [Interleaved 1F1B]
// With V virtual stages per rank (parallel.virtual_stages) the model's blocks split into P = p * V virtual
// stages and rank s holds chunks c = 0 .. V-1, chunk c being virtual stage v = c * p + s (the embedding is on
// v = 0: rank 0, chunk 0; the head on v = P - 1: rank p - 1, chunk V - 1). Megatron's interleaved schedule
// (Narayanan et al. 2021), for M micro-batches with M % p == 0: each rank runs M * V forward "chunk steps"; the
// k-th one (k = 0 .. M*V-1) is
//     group = k / (p V),  r = k mod (p V),  chunk = r / p,  micro-batch = group * p + r mod p,
// i.e. micro-batches go through the chunks in groups of p (p micro-batches through chunk 0, the same p through
// chunk 1, ..., then the next p). The k-th backward step is the same with chunk = V - 1 - r / p (the chunks in
// reverse). Rank s runs
//     w = min(2 (p - s - 1) + (V - 1) p, M V)
// forward steps (warm-up: the 2 (p - s - 1) fill the pipeline in both directions for every chunk's round trip,
// (V - 1) p cover the other chunks of the first group), then M V - w pairs of (forward step w + i, backward step
// i), then the last w backward steps (cool-down). With unit-time forwards and 2-unit backwards (each of 1/V of
// that per chunk) the idle time per rank is (p - 1) * 3 / V instead of (p - 1) * 3: the bubble falls by V
// (measured by tests/pipeline_schedule_test.cc, InterleavedBubbleFallsByV). The price: up to w + 1 chunk
// activations in flight on rank s (2 (p - s - 1) + (V - 1) p + 1 chunks of 1/V of the rank's blocks each),
// more than 1F1B's p - s stages for V > 1, and V times as many point-to-point messages.
// V = 1 is exactly the 1F1B or GPipe table above.

// One step of a rank's table. slot: the activation slot (0 .. pipeline_in_flight - 1) the micro-batch's
// activations of this chunk occupy from its forward until its backward (pipeline_schedule assigns the lowest
// free one at each forward; for V = 1 that is micro_batch % in-flight count).
struct PipelineAction {
  bool forward = true;
  int micro_batch = 0;
  int chunk = 0;
  int slot = 0;
  bool operator==(const PipelineAction& o) const {
    return forward == o.forward && micro_batch == o.micro_batch && chunk == o.chunk && slot == o.slot;
  }
};

// The actions of `stage` (0-based, of `stages` ranks) for one optimizer step of `micro_batches`, with
// `virtual_stages` chunks per rank. Preconditions (the config checks them for users): virtual_stages >= 1; for
// virtual_stages > 1, kind == kOneFOneB, stages > 1 and micro_batches % stages == 0.
std::vector<PipelineAction> pipeline_schedule(PipelineKind kind, int stages, int stage, int micro_batches,
                                              int virtual_stages = 1);

// The most micro-batch chunks whose activations `stage` holds at once under the schedule: the slots its Model
// needs (one pool over all its chunks).
int pipeline_in_flight(PipelineKind kind, int stages, int stage, int micro_batches, int virtual_stages = 1);

// "F0 F1 B0 F2 B1 B2": for logs and test failure messages; a chunk c > 0 is written after the micro-batch
// ("F3c1": micro-batch 3 through chunk 1).
std::string schedule_to_string(const std::vector<PipelineAction>& actions);

// The blocks of each stage, [first, end) per stage; the first stage also holds the embedding, the last the
// final norm and output head.
// - stages <= n_layer: the blocks split as evenly as possible, earlier stages taking one extra block when it
//   does not divide;
// - n_layer < stages <= n_layer + 2: the embedding and the head count as one unit each, and the n_layer + 2
//   units split evenly, so the first and/or last stage may hold no block (e.g. 2 blocks over 4 stages:
//   [embedding] [block 0] [block 1] [head]).
std::vector<std::pair<int, int>> split_layers(int n_layer, int stages);

// The chunks of rank `stage` of `stages` with `virtual_stages` chunks each: chunk c is virtual stage
// c * stages + stage of split_layers(n_layer, stages * virtual_stages). Precondition: n_layer + 2 >= stages *
// virtual_stages.
std::vector<std::pair<int, int>> rank_chunks(int n_layer, int stages, int stage, int virtual_stages);

}  // namespace tessera

// RunTrace: the trace of a few training steps (`tessera train --trace-steps A:B`, logging.trace_steps) as files a
// person opens in ui.perfetto.dev or chrome://tracing. It turns this rank's recorder (core/trace.h) on for steps
// A to B; after step B (its checkpoint save included) every rank writes RUN_DIR/trace/rank_N.json, and once all
// have (a barrier over the world group), world rank 0 merges them into RUN_DIR/trace/trace.json: one process per
// rank (pid = world rank, named "rank N (tp T, pp P, dp D)"), one thread per track (compute, the communication
// tracks, data, checkpoint), times in microseconds from the earliest event (the wall-clock origin, in Unix
// microseconds, is in otherData.origin_unix_us). Rank files keep the absolute wall clock.
//
// Off (no logging.trace_steps), nothing is written and every span costs a branch (Note [Tracing cost]). A trace
// that cannot be written or merged is reported as a warning: it never stops a run.
//
// before_step and after_step are called by every rank for the same steps; after_step of step B and finish() are
// collective over the world group.
#pragma once

#include <string>

#include "parallel/process_group.h"

namespace tessera {

class RunTrace {
 public:
  // steps: logging.trace_steps, validated ("A:B") or empty (off). label: this rank's process name in the trace.
  // world must outlive this object.
  RunTrace(const std::string& run_dir, const std::string& steps, ProcessGroup& world, std::string label);

  // Training step `step` (1-based, as in metrics.jsonl) is about to begin: records it if it is traced.
  void before_step(int step);
  // Step `step` is over, its checkpoint save included: after the last traced step, writes and merges the files.
  void after_step(int step);
  // The run is over: writes and merges what was recorded if the run ended inside the traced steps (fewer
  // train.steps, a stop signal); nothing otherwise.
  void finish();

 private:
  void write_and_merge();
  // World rank 0: reads every rank's file and writes trace.json. Returns the number of events.
  size_t merge() const;

  std::string trace_dir_;
  ProcessGroup& world_;
  std::string label_;
  int first_ = 0, last_ = -1;  // traced steps; first_ == 0: off
  bool recorded_ = false;      // something was recorded and not yet written
};

}  // namespace tessera

// Trace: this rank's recorder of timed spans — forward and backward of each micro-batch, pipeline sends and
// receives, DP bucket reductions, TP collectives, the optimizer, data loading, checkpoint writes — for a
// Chrome / Perfetto trace of a few training steps (`tessera train --trace-steps A:B`;
// launcher/run/run_trace.h writes each rank's events to RUN_DIR/trace/rank_N.json and merges them).
//
// Note [Tracing cost]. Nothing is recorded unless a traced step is running. Off, a Span is one relaxed atomic
// load and a branch: no clock read, no allocation, no lock, and the instrumented code computes exactly what it
// computes without it (spans only read the clock). On, a span reads the wall clock twice and appends one event
// under a mutex.
//
// Why one recorder per process rather than an object passed in: the spans sit deep inside parallel/ (the pipeline
// executor, the DP gradient sync, the TP layers) and launcher/ (trainer, checkpoints); each rank is one process,
// so the process's recorder is the rank's, like its console. Only the training loop turns it on and off.
//
// Clock: the wall clock (std::chrono::system_clock), microseconds since the Unix epoch, so the events of ranks on
// one machine line up without any exchange (across machines, as well as their clocks agree: NTP keeps them within
// about a millisecond). On a GPU the spans time the host: kernels are launched asynchronously and tracing adds
// no synchronization, so a span is where the host waited or launched, not where the device ran.
//
// Thread-safety: spans may be recorded from any thread (the asynchronous checkpoint writer); start(), stop() and
// take_events() come from the main thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace tessera::trace {

// The track (a Chrome "tid") an event is drawn on: one per activity, so that communication a rank waits for
// shows under its compute, and the pipeline bubble as the gaps on the compute track.
enum class Track : int {
  kStep = 0,              // the step, validation
  kCompute = 1,           // forward, backward, gradient norm, optimizer
  kPipeline = 2,          // pipeline sends, receives and their waits; the tied-gradient exchange
  kDataParallel = 3,      // DP bucket collectives: launch, wait; ZeRO-1's all-gather
  kTensorParallel = 4,    // TP all-reduces inside forward and backward
  kCollective = 5,        // the step's loss sum
  kData = 6,              // loading micro-batches
  kCheckpoint = 7,        // checkpoint save and publish on the main thread
  kCheckpointWriter = 8,  // the asynchronous checkpoint writer thread
};
constexpr int kTrackCount = 9;
// "compute", "comm: pipeline", ...: the thread name a trace shows.
const char* track_name(Track track);

struct Event {
  std::string name;
  const char* category = "";  // "forward", "backward", "pp", "dp", "tp", "data", "checkpoint", ...
  Track track = Track::kCompute;
  int64_t ts_us = 0;   // wall clock, microseconds since the Unix epoch
  int64_t dur_us = 0;  // >= 0
  int step = 0;        // the training step (1-based, as in metrics.jsonl) being traced when the span began
  // Further "args" members as JSON text without braces ("\"micro_batch\": 1, \"layers\": \"0-1\""), or empty.
  std::string args;
  // >= 0: an interval that may overlap others on its track (a DP bucket in flight), written as a Chrome async
  // event pair with this id; -1: a complete event ("ph": "X"), nested properly within its track.
  int64_t async_id = -1;
};

namespace detail {
extern std::atomic<bool> g_recording;
}  // namespace detail

// Whether a traced step is running (Note [Tracing cost]).
inline bool recording() { return detail::g_recording.load(std::memory_order_relaxed); }
// Records the events of training step `step` (1-based) from now on, until stop().
void start(int step);
void stop();
// The step being traced (0 before the first start()).
int current_step();
// The wall clock in microseconds since the Unix epoch.
int64_t now_us();
// Appends one event (thread-safe). Callers record only what began while recording().
void record(Event event);
// Every event recorded since the last call, in the order recorded; the recorder is left empty.
std::vector<Event> take_events();

// A span of time on one track, recorded when it ends if tracing was on when it began.
//   trace::Span span(trace::Track::kCompute, "forward", "forward");
//   if (span.on()) span.name(str_cat("forward mb", m)).arg("micro_batch", m);
class Span {
 public:
  Span(Track track, const char* category, const char* name) : on_(recording()) {
    if (on_) begin(track, category, name);
  }
  ~Span() {
    if (on_) end();
  }
  Span(const Span&) = delete;
  Span& operator=(const Span&) = delete;

  // Whether this span records (tracing was on when it began): guard any work done only for the trace.
  bool on() const { return on_; }
  // Replaces the name; adds a member to the event's args. No effect unless on().
  Span& name(std::string name);
  Span& arg(const char* key, int64_t value);
  Span& arg(const char* key, const std::string& value);

 private:
  void begin(Track track, const char* category, const char* name);
  void end();

  bool on_;
  Event event_;
};

}  // namespace tessera::trace

// The process's trace recorder (core/trace.h): a flag read on every span, and a locked vector of events.
#include "core/trace.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <utility>

namespace tessera::trace {

namespace detail {
std::atomic<bool> g_recording{false};
}  // namespace detail

namespace {

std::mutex g_mutex;
std::vector<Event> g_events;  // guarded by g_mutex
std::atomic<int> g_step{0};

std::string json_quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      static const char* kHex = "0123456789abcdef";
      out += "\\u00";
      out += kHex[(c >> 4) & 0xf];
      out += kHex[c & 0xf];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace

const char* track_name(Track track) {
  switch (track) {
    case Track::kStep:
      return "step";
    case Track::kCompute:
      return "compute";
    case Track::kPipeline:
      return "comm: pipeline";
    case Track::kDataParallel:
      return "comm: dp buckets";
    case Track::kTensorParallel:
      return "comm: tp";
    case Track::kCollective:
      return "comm: loss sum";
    case Track::kData:
      return "data";
    case Track::kCheckpoint:
      return "checkpoint";
    case Track::kCheckpointWriter:
      return "checkpoint writer";
  }
  return "other";
}

void start(int step) {
  g_step.store(step, std::memory_order_relaxed);
  detail::g_recording.store(true, std::memory_order_relaxed);
}

void stop() { detail::g_recording.store(false, std::memory_order_relaxed); }

int current_step() { return g_step.load(std::memory_order_relaxed); }

int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void record(Event event) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_events.push_back(std::move(event));
}

std::vector<Event> take_events() {
  std::lock_guard<std::mutex> lock(g_mutex);
  std::vector<Event> events;
  events.swap(g_events);
  return events;
}

void Span::begin(Track track, const char* category, const char* name) {
  event_.track = track;
  event_.category = category;
  event_.name = name;
  event_.step = current_step();
  event_.ts_us = now_us();
}

void Span::end() {
  event_.dur_us = std::max<int64_t>(0, now_us() - event_.ts_us);
  record(std::move(event_));
}

Span& Span::name(std::string name) {
  if (on_) event_.name = std::move(name);
  return *this;
}

Span& Span::arg(const char* key, int64_t value) {
  if (on_) event_.args += (event_.args.empty() ? "" : ", ") + json_quoted(key) + ": " + std::to_string(value);
  return *this;
}

Span& Span::arg(const char* key, const std::string& value) {
  if (on_) event_.args += (event_.args.empty() ? "" : ", ") + json_quoted(key) + ": " + json_quoted(value);
  return *this;
}

}  // namespace tessera::trace

// Writing and merging the trace files in Chrome's JSON trace format (the "traceEvents" array of complete events
// "ph": "X", async pairs "b"/"e" and "M" metadata naming processes and threads), which Perfetto reads too.
#include "launcher/run/run_trace.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <set>
#include <utility>
#include <vector>

#include "core/check.h"
#include "core/trace.h"
#include "launcher/common/config.h"
#include "launcher/common/durable_file.h"
#include "launcher/common/json_io.h"
#include "launcher/run/run_dir.h"

namespace tessera {

namespace {

std::string quoted(const std::string& s) { return dump_json(Json(s)); }

std::string metadata(const char* name, int pid, int tid, const std::string& args) {
  return str_cat("{\"name\": \"", name, "\", \"ph\": \"M\", \"pid\": ", pid, ", \"tid\": ", tid, ", \"args\": {", args,
                 "}}");
}

// One rank's events as a trace file of its own (loadable alone), times on the absolute wall clock.
std::string rank_file_text(const std::vector<trace::Event>& events, int rank, const std::string& label, int first,
                           int last) {
  std::vector<std::string> lines;
  lines.push_back(metadata("process_name", rank, 0, "\"name\": " + quoted(label)));
  lines.push_back(metadata("process_sort_index", rank, 0, str_cat("\"sort_index\": ", rank)));
  std::set<int> tracks;
  for (const trace::Event& e : events) tracks.insert(static_cast<int>(e.track));
  for (int track : tracks) {
    lines.push_back(metadata("thread_name", rank, track,
                             str_cat("\"name\": ", quoted(trace::track_name(static_cast<trace::Track>(track))))));
    lines.push_back(metadata("thread_sort_index", rank, track, str_cat("\"sort_index\": ", track)));
  }
  for (const trace::Event& e : events) {
    const std::string args = str_cat("{\"step\": ", e.step, e.args.empty() ? "" : ", ", e.args, "}");
    const std::string common = str_cat("\"name\": ", quoted(e.name), ", \"cat\": ", quoted(e.category),
                                       ", \"pid\": ", rank, ", \"tid\": ", static_cast<int>(e.track));
    if (e.async_id < 0) {
      lines.push_back(str_cat("{", common, ", \"ph\": \"X\", \"ts\": ", e.ts_us, ", \"dur\": ", e.dur_us,
                              ", \"args\": ", args, "}"));
    } else {
      // Async ids are global in Chrome's format: make them unique per rank and step.
      const std::string id = str_cat("\"", rank, ".", e.step, ".", e.async_id, "\"");
      lines.push_back(
          str_cat("{", common, ", \"ph\": \"b\", \"id\": ", id, ", \"ts\": ", e.ts_us, ", \"args\": ", args, "}"));
      lines.push_back(str_cat("{", common, ", \"ph\": \"e\", \"id\": ", id, ", \"ts\": ", e.ts_us + e.dur_us, "}"));
    }
  }
  std::string text = "{\"traceEvents\": [\n";
  for (size_t i = 0; i < lines.size(); ++i) text += lines[i] + (i + 1 < lines.size() ? ",\n" : "\n");
  text += str_cat("], \"displayTimeUnit\": \"ms\", \"otherData\": {\"rank\": ", rank, ", \"label\": ", quoted(label),
                  ", \"traced_steps\": \"", first, ":", last,
                  "\", \"clock\": \"wall clock, microseconds since the Unix epoch\"}}\n");
  return text;
}

std::string rank_file(const std::string& dir, int rank) { return str_cat(dir, "/rank_", rank, ".json"); }

}  // namespace

RunTrace::RunTrace(const std::string& run_dir, const std::string& steps, ProcessGroup& world, std::string label)
    : trace_dir_(run_dir + "/trace"), world_(world), label_(std::move(label)) {
  if (steps.empty()) return;
  TS_CHECK(parse_step_range(steps, &first_, &last_), ConfigError, "logging.trace_steps '", steps,
           "' is not FIRST:LAST (1 <= FIRST <= LAST)");
}

void RunTrace::before_step(int step) {
  if (first_ == 0) return;
  if (step >= first_ && step <= last_) {
    trace::start(step);
    recorded_ = true;
  }
}

void RunTrace::after_step(int step) {
  if (recorded_ && step >= last_) write_and_merge();
}

void RunTrace::finish() {
  if (recorded_) write_and_merge();
}

void RunTrace::write_and_merge() {
  trace::stop();
  recorded_ = false;
  const std::vector<trace::Event> events = trace::take_events();
  const int rank = world_.rank();
  try {
    std::error_code error;
    std::filesystem::create_directories(trace_dir_, error);
    TS_CHECK(std::filesystem::is_directory(trace_dir_), DataError, "cannot create '", trace_dir_,
             "': ", error.message());
    write_file_atomically(rank_file(trace_dir_, rank), rank_file_text(events, rank, label_, first_, last_));
  } catch (const Error& e) {
    std::fprintf(stderr, "warning: rank %d: no trace file: %s\n", rank, e.what());
  }
  // Rank 0 reads the other ranks' files only once every rank has written its own.
  world_.barrier();
  if (rank != 0) return;
  try {
    const size_t merged = merge();
    std::printf(
        "trace of steps %d-%d: %s/trace.json (%zu events, %d rank(s)); open it in ui.perfetto.dev or "
        "chrome://tracing\n",
        first_, last_, trace_dir_.c_str(), merged, world_.size());
  } catch (const Error& e) {
    std::printf("warning: the trace files in %s were not merged: %s\n", trace_dir_.c_str(), e.what());
  }
  std::fflush(stdout);
}

size_t RunTrace::merge() const {
  std::vector<Json> events;
  for (int r = 0; r < world_.size(); ++r) {
    const std::string path = rank_file(trace_dir_, r);
    const Json file = parse_json(read_file(path), path);
    TS_CHECK(file.is_object() && file.contains("traceEvents") && file["traceEvents"].is_array(), DataError, path,
             ": no traceEvents array");
    for (const Json& e : file["traceEvents"]) events.push_back(e);
  }
  // Times from the earliest event, so that the numbers a viewer shows stay small.
  int64_t origin = std::numeric_limits<int64_t>::max();
  for (const Json& e : events) {
    if (e.contains("ts") && e["ts"].is_number_integer()) origin = std::min(origin, e["ts"].get<int64_t>());
  }
  if (origin == std::numeric_limits<int64_t>::max()) origin = 0;
  Json list = Json::array();
  size_t timed = 0;
  for (Json& e : events) {
    if (e.contains("ts") && e["ts"].is_number_integer()) {
      e["ts"] = e["ts"].get<int64_t>() - origin;
      ++timed;
    }
    list.push_back(std::move(e));
  }
  Json other = Json::object();
  other["traced_steps"] = str_cat(first_, ":", last_);
  other["ranks"] = world_.size();
  other["clock"] = "wall clock; ts in microseconds after origin_unix_us (microseconds since the Unix epoch)";
  other["origin_unix_us"] = origin;
  Json trace = Json::object();
  trace["traceEvents"] = std::move(list);
  trace["displayTimeUnit"] = "ms";
  trace["otherData"] = std::move(other);
  write_file_atomically(trace_dir_ + "/trace.json", dump_json(trace) + "\n");
  return timed;
}

}  // namespace tessera

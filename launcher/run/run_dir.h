// The run directory: where a training run writes its resolved config and metrics.jsonl (train.log:
// console_log.h; tensorboard/: tensorboard_writer.h).
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "launcher/common/json_io.h"

namespace tessera {

// Creates dir and its parents if missing. Throws ConfigError naming the directory if it cannot.
void make_directories(const std::string& dir);

// Appends one JSON object per line to a file; written only by the process that owns it (rank 0).
class MetricsWriter {
 public:
  // Opens (truncating) path. Throws ConfigError if it cannot be created.
  explicit MetricsWriter(const std::string& path);
  // For a run resumed after step `resumed_step`: keeps the rows of steps <= resumed_step already in path (a
  // run killed after its last checkpoint wrote rows that are run again) and appends after them.
  MetricsWriter(const std::string& path, long long resumed_step);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  // Writes one line (a complete JSON object) and flushes it, so a killed run keeps every finished step.
  void write_line(const std::string& json_object);

 private:
  std::FILE* file_ = nullptr;
};

// One row of metrics.jsonl or eval --json, built in order: {"step": 3, "loss": 2.5, ...} (dump_json_line's
// layout). JSON has no NaN or infinity: such a number is written as the string "nan", "inf" or "-inf", so that
// the row of a skipped step still says what happened.
class JsonObject {
 public:
  JsonObject& add(const std::string& key, double value);
  JsonObject& add(const std::string& key, long long value);
  JsonObject& add(const std::string& key, int value) { return add(key, static_cast<long long>(value)); }
  JsonObject& add(const std::string& key, const std::string& value);
  JsonObject& add(const std::string& key, const std::vector<double>& values);  // an array of numbers
  // The number rounded to `decimals` digits after the point (a Unix time to the millisecond: "time", 3).
  JsonObject& add_fixed(const std::string& key, double value, int decimals);
  std::string str() const;

 private:
  Json row_ = Json::object();
};

}  // namespace tessera

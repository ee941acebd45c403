// The run directory: where a training run writes its resolved config and metrics.jsonl (train.log:
// console_log.h; tensorboard/: tensorboard_writer.h).
#pragma once

#include <cstdio>
#include <string>
#include <vector>

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

// A small builder for one flat JSON object: {"step": 3, "loss": 2.5, ...}.
class JsonObject {
 public:
  JsonObject& add(const std::string& key, double value);
  JsonObject& add(const std::string& key, long long value);
  JsonObject& add(const std::string& key, int value) { return add(key, static_cast<long long>(value)); }
  JsonObject& add(const std::string& key, const std::string& value);
  JsonObject& add(const std::string& key, const std::vector<double>& values);  // an array of numbers
  // A number with `decimals` digits after the point (a Unix time to the millisecond: "time", 3).
  JsonObject& add_fixed(const std::string& key, double value, int decimals);
  std::string str() const { return "{" + body_ + "}"; }

 private:
  static std::string json_number(double value);
  void add_key(const std::string& key);
  std::string body_;
};

// s with JSON string escapes, without the surrounding quotes.
std::string json_escape(const std::string& s);

}  // namespace tessera

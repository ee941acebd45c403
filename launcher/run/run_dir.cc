// Run directory and JSON-lines metrics.
#include "launcher/run/run_dir.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/check.h"
#include "launcher/common/json.h"

namespace tessera {

void make_directories(const std::string& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  TS_CHECK(!error, ConfigError, "cannot create directory '", dir, "': ", error.message(),
           ". Choose another run directory with --run-dir.");
}

MetricsWriter::MetricsWriter(const std::string& path) {
  file_ = std::fopen(path.c_str(), "w");
  TS_CHECK(file_ != nullptr, ConfigError, "cannot write '", path, "': ", std::strerror(errno));
}

MetricsWriter::MetricsWriter(const std::string& path, long long resumed_step) {
  std::string kept;
  if (std::FILE* old = std::fopen(path.c_str(), "r")) {
    char line[4096];
    const std::string key = "{\"step\": ";
    while (std::fgets(line, sizeof(line), old) != nullptr) {
      const std::string text = line;
      if (text.compare(0, key.size(), key) != 0 || text.back() != '\n') continue;
      if (std::atoll(text.c_str() + key.size()) <= resumed_step) kept += text;
    }
    std::fclose(old);
  }
  file_ = std::fopen(path.c_str(), "w");
  TS_CHECK(file_ != nullptr, ConfigError, "cannot write '", path, "': ", std::strerror(errno));
  std::fputs(kept.c_str(), file_);
  std::fflush(file_);
}

MetricsWriter::~MetricsWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

void MetricsWriter::write_line(const std::string& json_object) {
  std::fputs(json_object.c_str(), file_);
  std::fputc('\n', file_);
  std::fflush(file_);
}

std::string json_escape(const std::string& s) {
  const std::string quoted = Json(s).dump();
  return quoted.substr(1, quoted.size() - 2);
}

// 9 significant digits (a float round-trips); JSON has no NaN or infinity, so they are strings.
std::string JsonObject::json_number(double value) {
  if (!std::isfinite(value)) return std::isnan(value) ? "\"nan\"" : (value > 0 ? "\"inf\"" : "\"-inf\"");
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", value);
  return buf;
}

void JsonObject::add_key(const std::string& key) {
  if (!body_.empty()) body_ += ", ";
  body_ += "\"" + json_escape(key) + "\": ";
}

JsonObject& JsonObject::add(const std::string& key, double value) {
  add_key(key);
  body_ += json_number(value);
  return *this;
}

JsonObject& JsonObject::add(const std::string& key, long long value) {
  add_key(key);
  body_ += std::to_string(value);
  return *this;
}

JsonObject& JsonObject::add(const std::string& key, const std::vector<double>& values) {
  add_key(key);
  body_ += "[";
  for (size_t i = 0; i < values.size(); ++i) body_ += (i ? ", " : "") + json_number(values[i]);
  body_ += "]";
  return *this;
}

JsonObject& JsonObject::add_fixed(const std::string& key, double value, int decimals) {
  if (!std::isfinite(value)) return add(key, value);
  add_key(key);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, value);
  body_ += buf;
  return *this;
}

JsonObject& JsonObject::add(const std::string& key, const std::string& value) {
  add_key(key);
  body_ += "\"" + json_escape(value) + "\"";
  return *this;
}

}  // namespace tessera

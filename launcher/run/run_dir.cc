// Run directory and JSON-lines metrics.
#include "launcher/run/run_dir.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/check.h"
#include "launcher/common/json_io.h"

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
  // Rows that are not a JSON object with an integer "step" (a line torn by a kill has no '\n') are dropped.
  std::string kept;
  std::ifstream old(path, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(old)), std::istreambuf_iterator<char>());
  for (size_t start = 0, end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) {
    const std::string line = text.substr(start, end - start);
    const Json row = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    const auto step = row.is_object() ? row.find("step") : row.end();
    if (step != row.end() && step->is_number_integer() && step->get<long long>() <= resumed_step) kept += line + "\n";
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

namespace {

Json number(double value) {
  if (!std::isfinite(value)) return std::isnan(value) ? "nan" : (value > 0 ? "inf" : "-inf");
  return value;
}

}  // namespace

JsonObject& JsonObject::add(const std::string& key, double value) {
  row_[key] = number(value);
  return *this;
}

JsonObject& JsonObject::add(const std::string& key, long long value) {
  row_[key] = value;
  return *this;
}

JsonObject& JsonObject::add(const std::string& key, const std::string& value) {
  row_[key] = value;
  return *this;
}

JsonObject& JsonObject::add(const std::string& key, const std::vector<double>& values) {
  Json array = Json::array();
  for (double value : values) array.push_back(number(value));
  row_[key] = std::move(array);
  return *this;
}

// The double nearest value * 10^decimals rounded, / 10^decimals: nlohmann writes it with at most `decimals`
// digits after the point (the shortest text that reads back as that double).
JsonObject& JsonObject::add_fixed(const std::string& key, double value, int decimals) {
  const double scale = std::pow(10.0, decimals);
  return add(key, std::isfinite(value) ? std::round(value * scale) / scale : value);
}

std::string JsonObject::str() const { return dump_json_line(row_); }

}  // namespace tessera

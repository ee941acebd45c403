// Typed reads of config.json entries, for the architectures' Hugging Face descriptions.
#include "models/hf_format.h"

#include <cstdio>
#include <cstdlib>
#include <limits>

#include "core/check.h"

namespace tessera {

namespace {

const HfValue* lookup(const HfConfigValues& values, const std::string& key) {
  auto it = values.find(key);
  if (it == values.end() || std::holds_alternative<std::monostate>(it->second)) return nullptr;
  return &it->second;
}

[[noreturn]] void wrong_type(const std::string& key, const std::string& where, const char* expected) {
  throw ConfigError(str_cat(where, ": \"", key, "\" must be ", expected));
}

}  // namespace

bool hf_has(const HfConfigValues& values, const std::string& key) { return lookup(values, key) != nullptr; }

int64_t hf_int(const HfConfigValues& values, const std::string& key, const std::string& where) {
  const HfValue* value = lookup(values, key);
  TS_CHECK(value != nullptr, ConfigError, where, ": \"", key, "\" is missing; it is needed for the model's shape");
  if (!std::holds_alternative<int64_t>(*value)) wrong_type(key, where, "an integer");
  return std::get<int64_t>(*value);
}

int64_t hf_int(const HfConfigValues& values, const std::string& key, const std::string& where, int64_t fallback) {
  return lookup(values, key) == nullptr ? fallback : hf_int(values, key, where);
}

double hf_number(const HfConfigValues& values, const std::string& key, const std::string& where, double fallback) {
  const HfValue* value = lookup(values, key);
  if (value == nullptr) return fallback;
  if (std::holds_alternative<int64_t>(*value)) return static_cast<double>(std::get<int64_t>(*value));
  if (!std::holds_alternative<double>(*value)) wrong_type(key, where, "a number");
  return std::get<double>(*value);
}

bool hf_bool(const HfConfigValues& values, const std::string& key, const std::string& where, bool fallback) {
  const HfValue* value = lookup(values, key);
  if (value == nullptr) return fallback;
  if (!std::holds_alternative<bool>(*value)) wrong_type(key, where, "true or false");
  return std::get<bool>(*value);
}

std::string hf_string(const HfConfigValues& values, const std::string& key, const std::string& where,
                      const std::string& fallback) {
  const HfValue* value = lookup(values, key);
  if (value == nullptr) return fallback;
  if (!std::holds_alternative<std::string>(*value)) wrong_type(key, where, "a string");
  return std::get<std::string>(*value);
}

int hf_positive_int(const HfConfigValues& values, const std::string& key, const std::string& where) {
  const int64_t value = hf_int(values, key, where);
  TS_CHECK(value > 0 && value <= std::numeric_limits<int>::max(), ConfigError, where, ": \"", key, "\" (", value,
           ") must be a positive integer below 2^31");
  return static_cast<int>(value);
}

double float_as_decimal(float value) {
  char text[32];
  for (int digits = 1; digits <= 9; ++digits) {
    std::snprintf(text, sizeof(text), "%.*g", digits, static_cast<double>(value));
    if (std::strtof(text, nullptr) == value) break;
  }
  return std::strtod(text, nullptr);
}

}  // namespace tessera

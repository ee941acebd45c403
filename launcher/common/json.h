// A small JSON value with a strict parser and a writer, for the files Hugging Face tools read and write
// (safetensors headers, config.json, the shard index). Objects keep their members in insertion order.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tessera {

class Json {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  Json() = default;  // null
  Json(bool value) : type_(Type::kBool), bool_(value) {}
  Json(int64_t value) : type_(Type::kNumber), integer_(true), int_(value), number_(static_cast<double>(value)) {}
  Json(int value) : Json(static_cast<int64_t>(value)) {}
  // Must be finite: JSON has no NaN or infinity.
  Json(double value) : type_(Type::kNumber), number_(value) {}
  Json(std::string value) : type_(Type::kString), string_(std::move(value)) {}
  Json(const char* value) : Json(std::string(value)) {}
  static Json array() { return Json(Type::kArray); }
  static Json object() { return Json(Type::kObject); }

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  // A number written without fraction or exponent that fits int64 (or made from an integer).
  bool is_integer() const { return type_ == Type::kNumber && integer_; }
  // Preconditions: the matching type (TS_ASSERT).
  bool as_bool() const;
  int64_t as_int() const;    // is_integer()
  double as_number() const;  // any number
  const std::string& as_string() const;
  const std::vector<Json>& items() const;                            // array
  const std::vector<std::pair<std::string, Json>>& members() const;  // object, in order

  // Object: the member's value, or nullptr.
  const Json* find(const std::string& key) const;
  // Object: sets key (replacing its value if present, else appending). Array: appends.
  Json& set(const std::string& key, Json value);
  Json& push_back(Json value);

  // The text: compact (indent < 0) or with members and items on lines of their own, indented by `indent`
  // spaces per level. Strings are escaped ("\"", "\\", control characters as \n or \u00XX); UTF-8 passes.
  std::string dump(int indent = -1) const;

 private:
  explicit Json(Type type) : type_(type) {}
  void dump_to(std::string& out, int indent, int depth) const;

  Type type_ = Type::kNull;
  bool bool_ = false;
  bool integer_ = false;
  int64_t int_ = 0;
  double number_ = 0;
  std::string string_;
  std::vector<Json> items_;
  std::vector<std::pair<std::string, Json>> members_;
};

// Parses one JSON document (RFC 8259) followed by nothing but whitespace. Strict: no comments, trailing
// commas, single quotes, NaN, leading zeros, control characters in strings, invalid UTF-8 or a duplicate key
// in an object; nesting at most 64 deep. Throws DataError "<where>: <problem> at byte N".
Json parse_json(std::string_view text, const std::string& where);

}  // namespace tessera

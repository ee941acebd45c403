// Job configuration: text-format parsing with readable errors, `--set` overrides through reflection, the
// world-size-independent checks, layout resolution and the fully explicit text form of a config.
#include "launcher/common/config.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "core/check.h"
#include "launcher/common/regular_file.h"
#include "models/registry.h"

namespace tessera {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// ---- small string helpers ---------------------------------------------------------------------------------

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// "a, b, c"
template <typename Range>
std::string join(const Range& items, const char* separator = ", ") {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += separator;
    out += str_cat(item);
  }
  return out;
}

std::vector<std::string> field_names(const Descriptor* message) {
  std::vector<std::string> names;
  for (int i = 0; i < message->field_count(); ++i) names.push_back(message->field(i)->name());
  return names;
}

std::vector<std::string> enum_names(const EnumDescriptor* type) {
  std::vector<std::string> names;
  for (int i = 0; i < type->value_count(); ++i) names.push_back(type->value(i)->name());
  return names;
}

// Case-insensitive edit distance, for "did you mean" suggestions.
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      const bool same =
          std::tolower(static_cast<unsigned char>(a[i - 1])) == std::tolower(static_cast<unsigned char>(b[j - 1]));
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (same ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// "; did you mean 'n_embd'? <Those> fields" when a field of message is close to name, else "; <those> fields",
// so that a list of the fields can follow.
std::string suggest_field(const Descriptor* message, std::string_view name, std::string_view those_fields) {
  const FieldDescriptor* best = nullptr;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (int i = 0; i < message->field_count(); ++i) {
    const size_t distance = edit_distance(name, message->field(i)->name());
    if (distance < best_distance) {
      best_distance = distance;
      best = message->field(i);
    }
  }
  if (best == nullptr || best_distance > std::max<size_t>(2, name.size() / 4)) {
    return str_cat("; ", those_fields);
  }
  std::string capitalized(those_fields);
  if (!capitalized.empty())
    capitalized[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(capitalized[0])));
  return str_cat("; did you mean '", best->name(), "'? ", capitalized);
}

// The dotted path from JobConfig to fields of message type `type` ("model" for ModelConfig), or "" for
// JobConfig itself or a type that is not reachable.
std::string block_path(const Descriptor* type) {
  const Descriptor* job = config::JobConfig::descriptor();
  if (type == job) return "";
  for (int i = 0; i < job->field_count(); ++i) {
    if (job->field(i)->message_type() == type) return job->field(i)->name();
  }
  return "";
}

// Every enum field named field_name in JobConfig and its blocks, as (path, type).
std::vector<std::pair<std::string, const EnumDescriptor*>> enum_fields_named(const std::string& field_name) {
  std::vector<std::pair<std::string, const EnumDescriptor*>> found;
  const Descriptor* job = config::JobConfig::descriptor();
  std::vector<const Descriptor*> messages = {job};
  for (int i = 0; i < job->field_count(); ++i) {
    if (job->field(i)->message_type() != nullptr) messages.push_back(job->field(i)->message_type());
  }
  for (const Descriptor* message : messages) {
    const FieldDescriptor* field = message->FindFieldByName(field_name);
    if (field == nullptr || field->enum_type() == nullptr) continue;
    const std::string block = block_path(message);
    found.emplace_back(block.empty() ? field->name() : block + "." + field->name(), field->enum_type());
  }
  return found;
}

// If message is `<prefix>"X"<middle>"Y"<rest>`, stores X and Y and returns true.
bool match_two_quoted(const std::string& message, std::string_view prefix, std::string_view middle, std::string* first,
                      std::string* second) {
  if (message.compare(0, prefix.size(), prefix) != 0) return false;
  const size_t first_end = message.find('"', prefix.size());
  if (first_end == std::string::npos || message.compare(first_end + 1, middle.size(), middle) != 0) return false;
  const size_t second_begin = first_end + 1 + middle.size();
  const size_t second_end = message.find('"', second_begin);
  if (second_end == std::string::npos) return false;
  *first = message.substr(prefix.size(), first_end - prefix.size());
  *second = message.substr(second_begin, second_end - second_begin);
  return true;
}

// A parser message rewritten to say what is allowed, and the text it is about (a field name or a value), so
// the reported position can point at its start rather than at the token after it.
struct ExplainedError {
  std::string message;
  std::string anchor;
};

ExplainedError explain_parser_message(const std::string& message) {
  std::string type_name, field_name, value;
  if (match_two_quoted(message, "Message type \"", " has no field named \"", &type_name, &field_name)) {
    const Descriptor* type = config::JobConfig::descriptor()->file()->pool()->FindMessageTypeByName(type_name);
    if (type == nullptr) return {message, field_name};
    const std::string block = block_path(type);
    return {str_cat("unknown field '", field_name, "' in ", type_name,
                    block.empty() ? std::string() : str_cat(" (the ", block, " { } block)"),
                    suggest_field(type, field_name, "its fields are: "), join(field_names(type))),
            field_name};
  }
  if (match_two_quoted(message, "Unknown enumeration value of \"", " for field \"", &value, &field_name)) {
    std::string out = str_cat("'", value, "' is not a value of field '", field_name, "'");
    const auto candidates = enum_fields_named(field_name);
    if (candidates.size() == 1) {
      out += str_cat("; allowed: ", join(enum_names(candidates[0].second)));
    } else {
      for (size_t i = 0; i < candidates.size(); ++i) {
        out += str_cat(i == 0 ? "; allowed: " : " or ", join(enum_names(candidates[i].second)), " (",
                       candidates[i].first, ")");
      }
    }
    return {out, value};
  }
  if (match_two_quoted(message, "Invalid value for boolean field \"", ". Value: \"", &field_name, &value)) {
    return {str_cat("'", value, "' is not a value of boolean field '", field_name, "'; use true or false"), value};
  }
  const std::string_view repeated = "Non-repeated field \"";
  if (message.compare(0, repeated.size(), repeated) == 0 && message.find('"', repeated.size()) != std::string::npos) {
    field_name = message.substr(repeated.size(), message.find('"', repeated.size()) - repeated.size());
    return {str_cat("field '", field_name, "' is set twice in the same block; keep one"), field_name};
  }
  const std::string_view got = "got: ";
  if (message.size() >= got.size() && message.compare(message.size() - got.size(), got.size(), got) == 0) {
    return {message + "the end of the text (is a closing '}' missing?)", ""};
  }
  return {message, ""};
}

// Collects the text-format parser's errors as "source:line:col: message" followed by the offending line and a
// caret, instead of letting protobuf log them. Lines and columns are reported one-based.
class ConfigErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  ConfigErrorCollector(const std::string& source_name, const std::string& text)
      : source_name_(source_name), text_(text) {}

  // Protobuf's line and column are zero-based; a tab advances the column to the next multiple of 8.
  void AddError(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    const ExplainedError explained = explain_parser_message(message);
    const std::string source_line = line_text(line);
    size_t offset = byte_offset(source_line, column);
    // The parser reports the position after the offending token; move back to the token itself.
    if (!explained.anchor.empty() && offset >= explained.anchor.size()) {
      const size_t anchor = source_line.rfind(explained.anchor, offset - explained.anchor.size());
      if (anchor != std::string::npos) offset = anchor;
    }
    std::string report =
        str_cat(source_name_, ":", line + 1, ":", visual_column(source_line, offset) + 1, ": ", explained.message);
    if (!trim(source_line).empty()) {
      // Copy tabs into the caret line so it lines up however the terminal expands them.
      std::string caret;
      for (size_t i = 0; i < offset && i < source_line.size(); ++i) caret += source_line[i] == '\t' ? '\t' : ' ';
      report += str_cat("\n    ", source_line, "\n    ", caret, "^");
    }
    errors_.push_back(report);
  }
  // The parser warns only about things this schema does not have (deprecated fields, extensions); a config
  // is strict, so a warning fails the parse like an error.
  void AddWarning(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    AddError(line, column, message);
  }

  bool empty() const { return errors_.empty(); }
  std::string str() const { return join(errors_, "\n"); }

 private:
  std::string line_text(int line) const {
    size_t begin = 0;
    for (int i = 0; i < line; ++i) {
      begin = text_.find('\n', begin);
      if (begin == std::string::npos) return "";
      ++begin;
    }
    return text_.substr(begin, std::min(text_.find('\n', begin), text_.size()) - begin);
  }

  static int visual_column(const std::string& line, size_t offset) {
    int column = 0;
    for (size_t i = 0; i < offset && i < line.size(); ++i) column = line[i] == '\t' ? (column / 8 + 1) * 8 : column + 1;
    return column;
  }

  // The byte offset in line of protobuf's column (past the end of the line if the column is).
  static size_t byte_offset(const std::string& line, int column) {
    size_t offset = 0;
    while (offset < line.size() && visual_column(line, offset + 1) <= column) ++offset;
    return offset;
  }

  std::string source_name_;
  const std::string& text_;
  std::vector<std::string> errors_;
};

// ---- --set values -----------------------------------------------------------------------------------------

template <typename Int>
bool parse_integer(std::string_view text, Int* value) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  if (text.empty() || text.front() == '+') return false;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), *value);
  return error == std::errc() && end == text.data() + text.size();
}

template <typename Int>
std::string integer_type_description(const char* type_name) {
  return str_cat("a whole number (", type_name, ", ", std::numeric_limits<Int>::min(), " to ",
                 std::numeric_limits<Int>::max(), ")");
}

bool parse_finite_double(std::string_view text, double* value) {
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  if (text.empty() || text.front() == '+') return false;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), *value);
  return error == std::errc() && end == text.data() + text.size() && std::isfinite(*value);
}

// Sets the scalar field of message from text. error_prefix starts error messages ("--set 'x=y': ").
void set_scalar_field(Message* message, const FieldDescriptor* field, std::string_view text, const std::string& path,
                      const std::string& error_prefix) {
  const Reflection* reflection = message->GetReflection();
  const auto bad_value = [&](const std::string& expected) {
    return ConfigError(str_cat(error_prefix, path, " takes ", expected, ", not '", text, "'"));
  };
  switch (field->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: {
      int32_t value = 0;
      if (!parse_integer(text, &value)) throw bad_value(integer_type_description<int32_t>("int32"));
      reflection->SetInt32(message, field, value);
      return;
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      int64_t value = 0;
      if (!parse_integer(text, &value)) throw bad_value(integer_type_description<int64_t>("int64"));
      reflection->SetInt64(message, field, value);
      return;
    }
    case FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t value = 0;
      if (!parse_integer(text, &value)) throw bad_value(integer_type_description<uint32_t>("uint32"));
      reflection->SetUInt32(message, field, value);
      return;
    }
    case FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t value = 0;
      if (!parse_integer(text, &value)) throw bad_value(integer_type_description<uint64_t>("uint64"));
      reflection->SetUInt64(message, field, value);
      return;
    }
    case FieldDescriptor::CPPTYPE_DOUBLE: {
      double value = 0;
      if (!parse_finite_double(text, &value)) throw bad_value("a finite number (double, e.g. 3e-4 or 0.5)");
      reflection->SetDouble(message, field, value);
      return;
    }
    case FieldDescriptor::CPPTYPE_FLOAT: {
      double value = 0;
      if (!parse_finite_double(text, &value) || std::abs(value) > std::numeric_limits<float>::max()) {
        throw bad_value(str_cat("a finite number that fits a float (e.g. 1e-5, at most ",
                                std::numeric_limits<float>::max(), " in magnitude)"));
      }
      reflection->SetFloat(message, field, static_cast<float>(value));
      return;
    }
    case FieldDescriptor::CPPTYPE_BOOL: {
      const std::string lower = to_lower(text);
      if (lower == "true" || lower == "1") {
        reflection->SetBool(message, field, true);
      } else if (lower == "false" || lower == "0") {
        reflection->SetBool(message, field, false);
      } else {
        throw bad_value("true or false");
      }
      return;
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      const EnumDescriptor* type = field->enum_type();
      const std::string lower = to_lower(text);
      for (int i = 0; i < type->value_count(); ++i) {
        if (to_lower(type->value(i)->name()) == lower) {
          reflection->SetEnum(message, field, type->value(i));
          return;
        }
      }
      throw bad_value(str_cat("one of ", join(enum_names(type)), " (", type->name(), ")"));
    }
    case FieldDescriptor::CPPTYPE_STRING:
      reflection->SetString(message, field, std::string(text));
      return;
    case FieldDescriptor::CPPTYPE_MESSAGE:
      break;
  }
  TS_ASSERT(false, "set_scalar_field called on message field ", field->full_name());
}

// ---- --set and --unset paths --------------------------------------------------------------------------------

// Where a dotted path leads: the field and the message that holds it.
struct FieldAt {
  Message* message = nullptr;  // null when a block on the way is not set and was not to be created
  const FieldDescriptor* field = nullptr;
  std::string path;  // the path as walked, without surrounding spaces
};

// Walks "a.b.c" from root: every name but the last must be a singular block of settings, which is created on the
// way when create is true. error_prefix starts error messages ("--set 'x=y': ").
FieldAt find_field(Message* root, std::string_view path, const std::string& error_prefix, bool create) {
  TS_CHECK(!path.empty(), ConfigError, error_prefix,
           "the field path is empty; the top-level fields are: ", join(field_names(root->GetDescriptor())));
  FieldAt at;
  at.message = root;
  const Descriptor* descriptor = root->GetDescriptor();
  size_t begin = 0;
  while (true) {
    const size_t dot = path.find('.', begin);
    const bool last = dot == std::string_view::npos;
    const std::string name(path.substr(begin, last ? std::string_view::npos : dot - begin));
    const std::string where = at.path.empty() ? "at the top level" : str_cat("in '", at.path, "'");
    TS_CHECK(!name.empty(), ConfigError, error_prefix, "empty field name in '", path, "'");
    at.field = descriptor->FindFieldByName(name);
    TS_CHECK(at.field != nullptr, ConfigError, error_prefix, "unknown field '", name, "' ", where,
             suggest_field(descriptor, name, "the fields there are: "), join(field_names(descriptor)));
    at.path += (at.path.empty() ? "" : ".") + name;
    if (last) return at;
    TS_CHECK(!at.field->is_repeated(), ConfigError, error_prefix, "'", at.path,
             "' is a repeated field: --set gives it whole elements (--set '", at.path,
             "={FIELD: VALUE ...}'), not one field of an element");
    TS_CHECK(at.field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE, ConfigError, error_prefix, "'", at.path,
             "' is a single value and has no field '", path.substr(dot + 1), "'");
    if (at.message != nullptr) {
      const Reflection* reflection = at.message->GetReflection();
      at.message = create || reflection->HasField(*at.message, at.field)
                       ? reflection->MutableMessage(at.message, at.field)
                       : nullptr;
    }
    descriptor = at.field->message_type();
    begin = dot + 1;
  }
}

// Appends one element, given in text format with or without its braces ("{prefix: \"a\" weight: 0.5}"), to the
// repeated field of message.
void add_repeated_element(Message* message, const FieldDescriptor* field, std::string_view value,
                          const std::string& path, const std::string& error_prefix) {
  TS_CHECK(field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE, ConfigError, error_prefix, "'", path,
           "' is a list of single values, which --set does not take: set it in the config file");
  if (value.size() >= 2 && value.front() == '{' && value.back() == '}') value = trim(value.substr(1, value.size() - 2));
  const Descriptor* type = field->message_type();
  TS_CHECK(!value.empty(), ConfigError, error_prefix, "an element of '", path,
           "' is empty: give its fields in text format, e.g. --set '", path, "={", type->field(0)->name(),
           ": ...}'; its fields are: ", join(field_names(type)));
  const Reflection* reflection = message->GetReflection();
  std::unique_ptr<Message> element(reflection->GetMessageFactory()->GetPrototype(type)->New());
  const std::string text(value);
  ConfigErrorCollector errors(str_cat("--set ", path), text);
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  const bool parsed = parser.ParseFromString(text, element.get());
  TS_CHECK(parsed && errors.empty(), ConfigError,
           errors.empty() ? str_cat(error_prefix, "not an element of '", path, "' in text format") : errors.str(),
           "\n(an element of ", path, " has the fields ", join(field_names(type)), ")");
  reflection->AddMessage(message, field)->CopyFrom(*element);
}

// The rule that the command line's choice of training data wins (apply_overrides): assigned maps each path the
// --set overrides name to the first assignment that names it.
std::vector<std::string> choose_training_data(config::JobConfig& job,
                                              const std::map<std::string, std::string>& assigned) {
  const config::DataConfig& data = job.data();
  const bool chose_mock = assigned.count("data.mock") > 0 && data.mock();
  const bool chose_prefix = assigned.count("data.train_prefix") > 0;
  const bool chose_blend = assigned.count("data.train_blend") > 0;
  if (!chose_mock && !chose_prefix && !chose_blend) return {};
  const std::string& by = assigned.at(chose_mock     ? "data.mock"
                                      : chose_prefix ? "data.train_prefix"
                                                     : "data.train_blend");
  const std::string outcome =
      chose_mock     ? std::string("training on generated tokens")
      : chose_prefix ? str_cat("training on '", data.train_prefix(), "'")
                     : str_cat("training on the blend of ", data.train_blend_size(), " dataset(s) given with --set");
  std::vector<std::string> notices;
  const auto ignored = [&](const std::string& what) {
    notices.push_back(str_cat("--set ", by, " overrides the config's ", what, ", which is ignored: ", outcome));
  };
  if (!chose_mock && data.mock()) {
    ignored("data.mock=true");
    job.mutable_data()->clear_mock();
  }
  if (!chose_prefix && data.has_train_prefix()) {
    ignored(str_cat("data.train_prefix '", data.train_prefix(), "'"));
    job.mutable_data()->clear_train_prefix();
  }
  if (!chose_blend && data.train_blend_size() > 0) {
    ignored(str_cat("data.train_blend (", data.train_blend_size(), " dataset(s))"));
    job.mutable_data()->clear_train_blend();
  }
  return notices;
}

// ---- validation -------------------------------------------------------------------------------------------

// Collects every problem found, so the user can fix them all in one go; throws them as one ConfigError.
class Problems {
 public:
  template <typename... Args>
  void add(const Args&... parts) {
    lines_.push_back(str_cat(parts...));
  }
  bool empty() const { return lines_.empty(); }

  void throw_if_any() const {
    if (lines_.empty()) return;
    if (lines_.size() == 1) throw ConfigError(lines_[0]);
    std::string message = str_cat(lines_.size(), " problems in the job config:");
    for (const std::string& line : lines_) message += "\n  - " + line;
    throw ConfigError(message);
  }

 private:
  std::vector<std::string> lines_;
};

// A required integer that must be positive. Returns whether it is usable (set and > 0).
bool check_required_positive(Problems& problems, bool has, long long value, const std::string& path) {
  if (!has) {
    const size_t dot = path.find('.');
    problems.add(path, " is required: set it in the ", path.substr(0, dot), " { } block of the config or with --set ",
                 path, "=N");
    return false;
  }
  if (value <= 0) {
    problems.add(path, " (", value, ") must be > 0");
    return false;
  }
  return true;
}

void check_finite_positive(Problems& problems, double value, const std::string& path) {
  if (!(std::isfinite(value) && value > 0)) problems.add(path, " (", value, ") must be a finite number > 0");
}

void check_finite_non_negative(Problems& problems, double value, const std::string& path, const char* note = "") {
  if (!(std::isfinite(value) && value >= 0)) problems.add(path, " (", value, ") must be a finite number >= 0", note);
}

// The divisors of n, ascending.
std::vector<int> divisors(int n) {
  std::vector<int> small, large;
  for (int d = 1; static_cast<long long>(d) * d <= n; ++d) {
    if (n % d != 0) continue;
    small.push_back(d);
    if (d != n / d) large.push_back(n / d);
  }
  small.insert(small.end(), large.rbegin(), large.rend());
  return small;
}

// The divisors of n nearest to wanted from below and above, as "4 or 5" (or just one of them).
std::string nearest_divisors(int n, int wanted) {
  int below = 0, above = 0;
  for (int d : divisors(n)) {
    if (d < wanted) below = d;
    if (d > wanted && above == 0) above = d;
  }
  if (below != 0 && above != 0) return str_cat(below, " or ", above);
  return str_cat(below != 0 ? below : above);
}

void validate_model(const config::ModelConfig& model, Problems& problems) {
  check_required_positive(problems, model.has_vocab_size(), model.vocab_size(), "model.vocab_size");
  check_required_positive(problems, model.has_n_layer(), model.n_layer(), "model.n_layer");
  const bool head_ok = check_required_positive(problems, model.has_n_head(), model.n_head(), "model.n_head");
  const bool embd_ok = check_required_positive(problems, model.has_n_embd(), model.n_embd(), "model.n_embd");
  if (head_ok && embd_ok && model.n_embd() % model.n_head() != 0) {
    problems.add("model.n_embd (", model.n_embd(), ") must be divisible by model.n_head (", model.n_head(),
                 "): every attention head gets n_embd / n_head channels; set model.n_head to a divisor of ",
                 model.n_embd(), " such as ", nearest_divisors(model.n_embd(), model.n_head()),
                 ", or change model.n_embd");
  }
  if (model.max_seq_len() <= 0) problems.add("model.max_seq_len (", model.max_seq_len(), ") must be > 0");
  check_finite_positive(problems, model.norm_eps(), "model.norm_eps");
  if (model.vocab_pad_multiple() < 1) {
    problems.add("model.vocab_pad_multiple (", model.vocab_pad_multiple(), ") must be >= 1 (1 = no padding)");
  }
  check_finite_positive(problems, model.init_std(), "model.init_std");
  if (model.n_kv_head() < 0) {
    problems.add("model.n_kv_head (", model.n_kv_head(), ") must be >= 0 (0 or unset: n_head, multi-head attention)");
  }
  if (model.ffn_hidden() < 0) {
    problems.add("model.ffn_hidden (", model.ffn_hidden(), ") must be >= 0 (0 or unset: the architecture's default)");
  }
  if (model.arch() == config::LLAMA) check_finite_positive(problems, model.rope_theta(), "model.rope_theta");
}

void validate_train(const config::JobConfig& job, Problems& problems) {
  const config::TrainConfig& train = job.train();
  check_required_positive(problems, train.has_steps(), train.steps(), "train.steps");
  check_required_positive(problems, train.has_global_batch(), train.global_batch(), "train.global_batch");
  const bool seq_len_ok = check_required_positive(problems, train.has_seq_len(), train.seq_len(), "train.seq_len");
  if (seq_len_ok && job.model().max_seq_len() > 0 && train.seq_len() > job.model().max_seq_len()) {
    problems.add("train.seq_len (", train.seq_len(), ") must be <= model.max_seq_len (", job.model().max_seq_len(),
                 "), the number of positions the model has; lower train.seq_len or raise model.max_seq_len");
  }
  check_finite_non_negative(problems, train.grad_clip(), "train.grad_clip", " (0 disables clipping)");
  check_finite_non_negative(problems, train.spike_zscore(), "train.spike_zscore", " (0 disables the spike guard)");
  if (train.max_skipped() < 1) {
    problems.add("train.max_skipped (", train.max_skipped(),
                 ") must be >= 1 (consecutive skipped steps that stop the run)");
  }
  if (train.threads() < 0) {
    problems.add("train.threads (", train.threads(), ") must be >= 0 (0 = share the machine's cores among its ranks)");
  }
  if (train.recompute_every() < 1) {
    problems.add("train.recompute_every (", train.recompute_every(),
                 ") must be >= 1: with train.recompute FULL the blocks whose index is a multiple of it are "
                 "recomputed (1, the default: every block)");
  } else if (train.recompute_every() != 1 && train.recompute() != config::FULL) {
    problems.add("train.recompute_every (", train.recompute_every(), ") applies to train.recompute FULL only, not ",
                 config::Recompute_Name(train.recompute()),
                 ": set train.recompute=FULL to recompute every k-th block, or leave train.recompute_every unset");
  }
}

void validate_optimizer(const config::JobConfig& job, Problems& problems) {
  const config::OptimizerConfig& optimizer = job.optimizer();
  check_finite_positive(problems, optimizer.lr(), "optimizer.lr");
  if (!(std::isfinite(optimizer.min_lr()) && optimizer.min_lr() >= 0 && optimizer.min_lr() <= optimizer.lr())) {
    problems.add("optimizer.min_lr (", optimizer.min_lr(), ") must be between 0 and optimizer.lr (", optimizer.lr(),
                 ")");
  }
  for (const auto& [value, path] :
       {std::pair{optimizer.beta1(), "optimizer.beta1"}, std::pair{optimizer.beta2(), "optimizer.beta2"}}) {
    if (!(value >= 0 && value < 1)) problems.add(path, " (", value, ") must be in [0, 1)");
  }
  check_finite_positive(problems, optimizer.eps(), "optimizer.eps");
  check_finite_non_negative(problems, optimizer.weight_decay(), "optimizer.weight_decay", " (0 disables decay)");
  if (optimizer.warmup_steps() < 0) {
    problems.add("optimizer.warmup_steps (", optimizer.warmup_steps(), ") must be >= 0");
  } else if (job.train().has_steps() && optimizer.warmup_steps() > job.train().steps()) {
    problems.add("optimizer.warmup_steps (", optimizer.warmup_steps(), ") must be <= train.steps (",
                 job.train().steps(), "); lower the warm-up or train for more steps");
  }
  if (optimizer.has_decay_steps() && optimizer.decay_steps() < 0) {
    problems.add("optimizer.decay_steps (", optimizer.decay_steps(),
                 ") must be >= 0; leave it unset to decay until the last step");
  }
}

void validate_parallel(const config::ParallelConfig& parallel, Problems& problems) {
  if (parallel.tp() < 1) problems.add("parallel.tp (", parallel.tp(), ") must be >= 1 (1 = no tensor parallelism)");
  if (parallel.pp() < 1) problems.add("parallel.pp (", parallel.pp(), ") must be >= 1 (1 = no pipeline)");
  if (parallel.has_dp() && parallel.dp() < 1) {
    problems.add("parallel.dp (", parallel.dp(), ") must be >= 1; leave it unset to use world size / (tp * pp)");
  }
  if (parallel.micro_batches() < 1) {
    problems.add("parallel.micro_batches (", parallel.micro_batches(), ") must be >= 1");
  }
  if (parallel.zero_stage() < 0 || parallel.zero_stage() > 2) {
    problems.add("parallel.zero_stage (", parallel.zero_stage(),
                 ") must be 0 (every data-parallel rank holds the optimizer state), 1 (the state is sharded "
                 "across data-parallel ranks) or 2 (the state and the gradients are sharded)");
  }
  check_finite_positive(problems, parallel.timeout_s(), "parallel.timeout_s");
  check_finite_positive(problems, parallel.dp_bucket_mb(), "parallel.dp_bucket_mb");
  // Interleaved 1F1B (Note [Interleaved 1F1B] in parallel/pipeline_schedule.h).
  const int V = parallel.virtual_stages();
  if (V < 1) {
    problems.add("parallel.virtual_stages (", V, ") must be >= 1 (1 = one model chunk per pipeline rank)");
  } else if (V > 1) {
    if (parallel.pp() == 1) {
      problems.add("parallel.virtual_stages=", V,
                   " interleaves model chunks across pipeline ranks, but parallel.pp is 1: set parallel.pp > 1, or "
                   "parallel.virtual_stages=1");
    }
    if (parallel.schedule() == config::GPIPE) {
      problems.add("parallel.virtual_stages=", V,
                   " needs parallel.schedule=ONE_F_ONE_B (the interleaved schedule is a 1F1B schedule): set it, or "
                   "parallel.virtual_stages=1 for GPIPE");
    }
    if (parallel.pp() > 1 && parallel.micro_batches() >= 1 && parallel.micro_batches() % parallel.pp() != 0) {
      const int below = parallel.micro_batches() / parallel.pp() * parallel.pp();
      problems.add("parallel.micro_batches (", parallel.micro_batches(), ") must be a multiple of parallel.pp (",
                   parallel.pp(), ") with parallel.virtual_stages=", V,
                   " (micro-batches go through the model chunks in groups of pp): set parallel.micro_batches to ",
                   below > 0 ? str_cat(below, " or ", below + parallel.pp()) : str_cat(parallel.pp()),
                   ", or parallel.virtual_stages=1");
    }
  }
  if (parallel.has_layout() && parallel.layout() != "auto") {
    problems.add("parallel.layout ('", parallel.layout(), "') must be \"auto\" (the layout planner picks tp, pp, dp, ",
                 "micro_batches, zero_stage and train.recompute; the ones you set are kept), or be left unset to run ",
                 "the layout parallel.tp, pp, dp and micro_batches give");
  }
}

void validate_device(const config::JobConfig& job, Problems& problems) {
  if (job.parallel().comm() == config::NCCL && job.train().device() != config::CUDA) {
    problems.add(
        "parallel.comm=NCCL needs GPU tensors: set train.device=CUDA, or parallel.comm=AUTO or MPI to run "
        "on train.device=",
        config::DeviceType_Name(job.train().device()));
  }
}

void validate_data(const config::DataConfig& data, Problems& problems) {
  const bool blend = data.train_blend_size() > 0;
  if (data.mock()) {
    if (data.has_train_prefix()) {
      problems.add(
          "data.mock=true and data.train_prefix are both set, so it is unclear what to train on: set "
          "data.mock=false to train on '",
          data.train_prefix(), "', or remove data.train_prefix to train on generated tokens");
    }
    if (blend) {
      problems.add("data.mock=true and data.train_blend are both set, so it is unclear what to train on: remove one");
    }
  } else if (blend && data.has_train_prefix()) {
    problems.add(
        "data.train_prefix and data.train_blend are both set: train on one dataset (train_prefix) or on a "
        "blend (train_blend), not both");
  } else if (!blend && (!data.has_train_prefix() || data.train_prefix().empty())) {
    problems.add(
        "data.train_prefix is not set, so there is nothing to train on: set it to the prefix of a "
        "tokenized dataset (PREFIX.bin + PREFIX.idx, made by `tessera prepare --out PREFIX`), list several in "
        "data.train_blend, or set data.mock=true to train on generated tokens");
  }
  for (int i = 0; i < data.train_blend_size(); ++i) {
    const config::BlendSource& source = data.train_blend(i);
    if (source.prefix().empty()) {
      problems.add("data.train_blend[", i, "].prefix is not set: give the prefix of a tokenized dataset");
    }
    if (!(source.weight() > 0) || !std::isfinite(source.weight())) {
      problems.add("data.train_blend[", i, "].weight (", source.weight(),
                   ") must be a finite number > 0 (the dataset's relative share of the samples)");
    }
  }
  if (data.has_valid_prefix() && data.valid_prefix().empty()) {
    problems.add("data.valid_prefix is set but empty: give the prefix of a tokenized dataset or remove it");
  }
}

void validate_logging(const config::JobConfig& job, Problems& problems) {
  const config::LoggingConfig& logging = job.logging();
  int first = 0, last = 0;
  if (!logging.trace_steps().empty() && !parse_step_range(logging.trace_steps(), &first, &last)) {
    problems.add("logging.trace_steps (--trace-steps) is '", logging.trace_steps(),
                 "': give FIRST:LAST, the 1-based steps to trace with 1 <= FIRST <= LAST, e.g. 2:3");
  }
  if (logging.log_every() < 1) problems.add("logging.log_every (", logging.log_every(), ") must be >= 1");
  if (logging.eval_every() < 0) {
    problems.add("logging.eval_every (", logging.eval_every(), ") must be >= 0 (0 disables evaluation)");
  }
  if (logging.eval_batches() < 1) problems.add("logging.eval_batches (", logging.eval_batches(), ") must be >= 1");
  if (logging.eval_every() > 0 && !job.data().mock() && !job.data().has_valid_prefix()) {
    problems.add("logging.eval_every (", logging.eval_every(),
                 ") asks for validation, but data.valid_prefix is not set: set it to a tokenized validation set "
                 "(made by `tessera prepare`), or set logging.eval_every=0 to disable evaluation");
  }
  if (logging.run_dir().empty()) {
    problems.add("logging.run_dir is empty: set it to the directory where the run's metrics and config go");
  }
  if (logging.has_eval_task()) {
    if (logging.eval_task().empty())
      problems.add("logging.eval_task is set but empty: give a .jsonl task or remove it");
    if (logging.eval_every() == 0) {
      problems.add(
          "logging.eval_task is scored at every evaluation, but logging.eval_every is 0: set "
          "logging.eval_every to a number of steps");
    }
    if (job.data().tokenizer().empty()) {
      problems.add("logging.eval_task needs data.tokenizer (the SentencePiece model) to tokenize the task's text");
    }
  }
}

void validate_checkpoint(const config::CheckpointConfig& checkpoint, Problems& problems) {
  if (checkpoint.every_steps() < 0) {
    problems.add("checkpoint.every_steps (", checkpoint.every_steps(),
                 ") must be >= 0 (0 = save only at the end of the run and when stopped by a signal)");
  }
  if (checkpoint.keep_last() < 0) {
    problems.add("checkpoint.keep_last (", checkpoint.keep_last(), ") must be >= 0 (0 = keep every checkpoint)");
  }
}

// Sets every unset singular field that has a declared default to that default, recursing into messages
// (which are created if missing).
void make_defaults_explicit(Message* message) {
  const Descriptor* descriptor = message->GetDescriptor();
  const Reflection* reflection = message->GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    if (field->is_repeated()) continue;
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      make_defaults_explicit(reflection->MutableMessage(message, field));
      continue;
    }
    if (reflection->HasField(*message, field) || !field->has_default_value()) continue;
    switch (field->cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        reflection->SetInt32(message, field, field->default_value_int32());
        break;
      case FieldDescriptor::CPPTYPE_INT64:
        reflection->SetInt64(message, field, field->default_value_int64());
        break;
      case FieldDescriptor::CPPTYPE_UINT32:
        reflection->SetUInt32(message, field, field->default_value_uint32());
        break;
      case FieldDescriptor::CPPTYPE_UINT64:
        reflection->SetUInt64(message, field, field->default_value_uint64());
        break;
      case FieldDescriptor::CPPTYPE_DOUBLE:
        reflection->SetDouble(message, field, field->default_value_double());
        break;
      case FieldDescriptor::CPPTYPE_FLOAT:
        reflection->SetFloat(message, field, field->default_value_float());
        break;
      case FieldDescriptor::CPPTYPE_BOOL:
        reflection->SetBool(message, field, field->default_value_bool());
        break;
      case FieldDescriptor::CPPTYPE_ENUM:
        reflection->SetEnum(message, field, field->default_value_enum());
        break;
      case FieldDescriptor::CPPTYPE_STRING:
        reflection->SetString(message, field, field->default_value_string());
        break;
      case FieldDescriptor::CPPTYPE_MESSAGE:
        break;
    }
  }
}

}  // namespace

config::JobConfig parse_job_config(const std::string& text, const std::string& source_name) {
  config::JobConfig job;
  ConfigErrorCollector errors(source_name, text);
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  const bool parsed = parser.ParseFromString(text, &job);
  TS_CHECK(
      parsed && errors.empty(), ConfigError,
      errors.empty() ? str_cat(source_name, ": not a valid tessera.config.JobConfig in text format") : errors.str());
  return job;
}

config::JobConfig load_job_config(const std::string& path, const ConfigOverrides& overrides,
                                  std::vector<std::string>* notices) {
  std::string problem;
  const int fd = open_regular_file(path, &problem);
  TS_CHECK(fd >= 0, ConfigError, "cannot read config '", path, "': it ", problem);
  std::FILE* file = ::fdopen(fd, "rb");
  if (file == nullptr) ::close(fd);
  TS_CHECK(file != nullptr, ConfigError, "cannot read config '", path, "': ", std::strerror(errno));
  std::string text;
  char buffer[1 << 16];
  size_t count = 0;
  while ((count = std::fread(buffer, 1, sizeof(buffer), file)) > 0) text.append(buffer, count);
  const int read_errno = std::ferror(file) ? (errno != 0 ? errno : EIO) : 0;
  std::fclose(file);
  TS_CHECK(read_errno == 0, ConfigError, "cannot read config '", path, "': ", std::strerror(read_errno));
  // Editors on some systems start UTF-8 files with a byte-order mark, which the text format does not take.
  if (text.rfind("\xef\xbb\xbf", 0) == 0) text.erase(0, 3);

  config::JobConfig job = parse_job_config(text, path);
  std::vector<std::string> lines = apply_overrides(job, overrides);
  validate_job_config(job);
  if (notices != nullptr) notices->insert(notices->end(), lines.begin(), lines.end());
  return job;
}

config::JobConfig load_job_config(const std::string& path, const std::vector<std::string>& overrides) {
  return load_job_config(path, ConfigOverrides{overrides, {}}, nullptr);
}

void apply_override(config::JobConfig& job, const std::string& assignment) {
  const std::string error_prefix = str_cat("--set '", assignment, "': ");
  const size_t equals = assignment.find('=');
  TS_CHECK(equals != std::string::npos, ConfigError, error_prefix,
           "expected path.to.field=value, e.g. --set parallel.tp=2");
  const std::string_view path = trim(std::string_view(assignment).substr(0, equals));
  const std::string_view value = trim(std::string_view(assignment).substr(equals + 1));
  TS_CHECK(!path.empty(), ConfigError, error_prefix, "the field path before '=' is empty; the top-level fields are: ",
           join(field_names(config::JobConfig::descriptor())));
  const FieldAt at = find_field(&job, path, error_prefix, /*create=*/true);
  if (at.field->is_repeated()) {
    add_repeated_element(at.message, at.field, value, at.path, error_prefix);
    return;
  }
  TS_CHECK(at.field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE, ConfigError, error_prefix, "'", at.path,
           "' is a block of settings, not a value; set one of its fields instead (--set ", at.path,
           ".FIELD=VALUE): ", join(field_names(at.field->message_type())));
  set_scalar_field(at.message, at.field, value, at.path, error_prefix);
}

void clear_field(config::JobConfig& job, const std::string& path) {
  const FieldAt at = find_field(&job, trim(path), str_cat("--unset '", path, "': "), /*create=*/false);
  if (at.message != nullptr) at.message->GetReflection()->ClearField(at.message, at.field);
}

std::vector<std::string> apply_overrides(config::JobConfig& job, const ConfigOverrides& overrides) {
  for (const std::string& path : overrides.unset) clear_field(job, path);
  // The paths the --set overrides name, in canonical form ("data.train_blend"), and the first assignment to each.
  std::map<std::string, std::string> assigned;
  for (const std::string& assignment : overrides.set) {
    const size_t equals = assignment.find('=');
    const std::string_view path =
        trim(std::string_view(assignment).substr(0, equals == std::string::npos ? 0 : equals));
    if (!path.empty()) {  // else apply_override says what is wrong
      const FieldAt at = find_field(&job, path, str_cat("--set '", assignment, "': "), /*create=*/true);
      // The command line's list replaces the file's.
      if (at.field->is_repeated() && !assigned.count(at.path)) {
        at.message->GetReflection()->ClearField(at.message, at.field);
      }
      assigned.emplace(at.path, assignment);
    }
    apply_override(job, assignment);
  }
  return choose_training_data(job, assigned);
}

void validate_job_config(const config::JobConfig& job) {
  Problems problems;
  validate_model(job.model(), problems);
  validate_train(job, problems);
  validate_optimizer(job, problems);
  validate_parallel(job.parallel(), problems);
  validate_device(job, problems);
  validate_data(job.data(), problems);
  validate_logging(job, problems);
  validate_checkpoint(job.checkpoint(), problems);
  problems.throw_if_any();
}

Layout resolve_layout(const config::JobConfig& job, int world_size) {
  TS_ASSERT(world_size >= 1, "world size ", world_size);
  validate_job_config(job);
  const config::ParallelConfig& parallel = job.parallel();
  // train, verify and bench replace "auto" by the planner's choice first (launcher/run/auto_layout.h).
  TS_CHECK(!parallel.has_layout(), ConfigError,
           "parallel.layout=auto is for tessera train, verify and bench (and tessera plan); this command runs the ",
           "layout it is given: unset parallel.layout and set parallel.tp, pp, dp and micro_batches (tessera plan ",
           "prints the best ones)");
  Layout layout;
  layout.tp = parallel.tp();
  layout.pp = parallel.pp();
  layout.micro_batches = parallel.micro_batches();
  const long long model_ranks = static_cast<long long>(layout.tp) * layout.pp;  // ranks holding one model copy
  const bool divides = world_size % model_ranks == 0;

  Problems problems;
  if (parallel.has_dp()) {
    layout.dp = parallel.dp();
    const long long ranks = model_ranks * layout.dp;
    if (ranks != world_size) {
      problems.add(
          "parallel.tp=", layout.tp, " * parallel.pp=", layout.pp, " * parallel.dp=", layout.dp, " = ", ranks,
          " ranks, but the job runs on ", world_size, " ranks (mpirun -np): ",
          divides ? str_cat("set parallel.dp=", world_size / model_ranks, " or leave it unset")
                  : str_cat("run on ", ranks, " ranks (mpirun -np ", ranks,
                            "), or choose parallel.tp, parallel.pp and parallel.dp whose product is ", world_size));
    }
  } else if (!divides) {
    problems.add("parallel.tp=", layout.tp, " * parallel.pp=", layout.pp, " = ", model_ranks,
                 " ranks per copy of the model, which does not divide the ", world_size,
                 " ranks the job runs on (mpirun -np): run on a multiple of ", model_ranks,
                 " ranks, or choose parallel.tp and parallel.pp whose product divides ", world_size);
  } else {
    layout.dp = static_cast<int>(world_size / model_ranks);
  }

  const config::ModelConfig& model = job.model();
  if (model.n_head() % layout.tp != 0) {
    problems.add("model.n_head (", model.n_head(), ") must be divisible by parallel.tp (", layout.tp,
                 "): every tensor-parallel rank computes whole attention heads; choose parallel.tp from ",
                 join(divisors(model.n_head())));
  }
  if (problems.empty()) {
    for (const std::string& problem :
         model_architecture(model_config_from(model).arch).shape_problems(model_config_from(model), layout.tp)) {
      problems.add(problem);
    }
  }
  // The embedding and the output head can each be a stage of their own, so n_layer + 2 stages is the most.
  if (model.n_layer() + 2 < layout.pp) {
    problems.add("parallel.pp (", layout.pp, ") is more than model.n_layer + 2 (", model.n_layer() + 2,
                 "): every pipeline stage needs a transformer layer, the embedding or the output head; set "
                 "parallel.pp to at most ",
                 model.n_layer() + 2);
  }
  bool micro_batch_known = false;
  const long long virtual_stages = static_cast<long long>(layout.pp) * parallel.virtual_stages();
  if (parallel.virtual_stages() > 1 && model.n_layer() + 2 < virtual_stages) {
    problems.add("parallel.pp (", layout.pp, ") * parallel.virtual_stages (", parallel.virtual_stages(),
                 ") = ", virtual_stages, " virtual stages is more than model.n_layer + 2 (", model.n_layer() + 2,
                 "): every virtual stage needs a transformer layer, the embedding or the output head; lower "
                 "parallel.virtual_stages to at most ",
                 std::max(1, (model.n_layer() + 2) / layout.pp), " or parallel.pp");
  }
  if (problems.empty()) {
    const long long slots = static_cast<long long>(layout.dp) * layout.micro_batches;
    const int global_batch = job.train().global_batch();
    if (global_batch % slots != 0) {
      const long long below = global_batch / slots * slots;
      problems.add("train.global_batch (", global_batch, ") must be divisible by dp (", layout.dp,
                   ") * parallel.micro_batches (", layout.micro_batches, ") = ", slots,
                   ", so that every micro-batch holds the same whole number of sequences: set train.global_batch to "
                   "a multiple of ",
                   slots, below > 0 ? str_cat(" such as ", below, " or ", below + slots) : str_cat(" such as ", slots),
                   ", or change the data-parallel size or parallel.micro_batches");
    } else {
      layout.micro_batch_size = static_cast<int>(global_batch / slots);
      micro_batch_known = true;
    }
  }
  // Note [Sequence parallelism] in parallel/tensor_parallel.h: each TP rank holds an equal contiguous chunk of
  // the micro-batch's tokens.
  if (parallel.sequence_parallel()) {
    if (layout.tp == 1) {
      problems.add(
          "parallel.sequence_parallel splits the norms and residual stream over the tensor-parallel ranks, "
          "so it needs parallel.tp > 1 (it is 1): set parallel.tp to 2 or more, or leave "
          "parallel.sequence_parallel unset");
    } else if (micro_batch_known) {
      const long long tokens = static_cast<long long>(layout.micro_batch_size) * job.train().seq_len();
      if (tokens % layout.tp != 0) {
        problems.add("parallel.sequence_parallel splits each micro-batch's tokens, micro-batch size (",
                     layout.micro_batch_size, ") * train.seq_len (", job.train().seq_len(), ") = ", tokens,
                     ", into equal chunks over parallel.tp (", layout.tp,
                     "), which does not divide them: choose train.seq_len or the micro-batch size (train.global_batch "
                     "/ (dp * parallel.micro_batches)) so that their product is a multiple of ",
                     layout.tp, ", or leave parallel.sequence_parallel unset");
      }
    }
  }
  problems.throw_if_any();
  return layout;
}

std::string job_config_to_text(const config::JobConfig& job) {
  config::JobConfig explicit_job = job;
  make_defaults_explicit(&explicit_job);
  std::string text;
  google::protobuf::TextFormat::Printer printer;
  const bool printed = printer.PrintToString(explicit_job, &text);
  TS_ASSERT(printed, "cannot print the job config as text");
  return text;
}

ModelConfig model_config_from(const config::ModelConfig& m) {
  ModelConfig c;
  // The registry's name is the Arch value in lower case (GPT2 -> "gpt2").
  c.arch = config::Arch_Name(m.arch());
  std::transform(c.arch.begin(), c.arch.end(), c.arch.begin(), [](unsigned char ch) { return std::tolower(ch); });
  c.vocab_size = m.vocab_size();
  c.n_layer = m.n_layer();
  c.n_head = m.n_head();
  c.n_embd = m.n_embd();
  c.max_seq_len = m.max_seq_len();
  c.norm_eps = m.norm_eps();
  c.dtype = m.dtype() == config::BF16 ? DType::kBF16 : DType::kF32;
  c.init_std = m.init_std();
  c.vocab_pad_multiple = m.vocab_pad_multiple();
  c.n_kv_head = std::max(m.n_kv_head(), 0);
  c.ffn_hidden = std::max(m.ffn_hidden(), 0);
  c.rope_theta = m.rope_theta();
  c.tie_embeddings = m.tie_embeddings();
  model_architecture(c.arch).fill_defaults(c, m.has_tie_embeddings());
  return c;
}

bool parse_step_range(const std::string& text, int* first, int* last) {
  const size_t colon = text.find(':');
  if (colon == std::string::npos) return false;
  auto parse = [](std::string_view digits, int* value) {
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string_view::npos) return false;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), *value);
    return error == std::errc() && end == digits.data() + digits.size();
  };
  const std::string_view view(text);
  return parse(view.substr(0, colon), first) && parse(view.substr(colon + 1), last) && *first >= 1 && *first <= *last;
}

ModelConfig training_model_config(const config::JobConfig& job) {
  ModelConfig c = model_config_from(job.model());
  switch (job.train().recompute()) {
    case config::SELECTIVE:
      c.recompute = Recompute::kSelective;
      break;
    case config::FULL:
      c.recompute = Recompute::kFull;
      break;
    default:
      c.recompute = Recompute::kNone;
      break;
  }
  c.recompute_every = std::max(job.train().recompute_every(), 1);
  c.sequence_parallel = job.parallel().sequence_parallel() && job.parallel().tp() > 1;
  return c;
}

}  // namespace tessera
